"""nhb.bench."""
