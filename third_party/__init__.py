"""Vendored third-party data (see each folder's README and licence)."""
