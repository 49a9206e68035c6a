"""azure simulator fake (being written)."""
