"""runway engine (being written)."""
