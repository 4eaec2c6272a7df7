"""Outreach's SQL: its tables and the statements over them, one module per thing kept. Imports
core (never shell or api); a caller owns the transaction."""
