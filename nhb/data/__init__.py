"""nhb.data."""
