"""stability simulator fake (being written)."""
