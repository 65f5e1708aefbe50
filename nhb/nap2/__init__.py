"""nhb.nap2."""
