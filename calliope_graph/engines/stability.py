"""stability engine (being written)."""
