"""nhb.models."""
