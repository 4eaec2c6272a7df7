"""outreach: consumes card changes and fires marketer-defined actions (see issue 4)."""
