"""runway simulator fake (being written)."""
