"""openai simulator fake (being written)."""
