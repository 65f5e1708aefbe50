"""nhb.nago."""
