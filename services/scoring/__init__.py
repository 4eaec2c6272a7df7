"""scoring: consumes customer events and keeps every customer's score card (see issue 3)."""
