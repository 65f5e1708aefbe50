"""nhb.dha."""
