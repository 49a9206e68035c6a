"""openai engine (being written)."""
