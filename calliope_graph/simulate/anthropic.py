"""anthropic simulator fake (being written)."""
