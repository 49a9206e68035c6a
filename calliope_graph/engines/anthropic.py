"""anthropic engine (being written)."""
