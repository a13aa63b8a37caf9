"""Planning: a campaign's ledger, one row per recipient with its frozen body; the summary and its cost."""
