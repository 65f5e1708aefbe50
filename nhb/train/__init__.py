"""nhb.train."""
