"""nhb.search."""
