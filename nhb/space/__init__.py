"""nhb.space."""
