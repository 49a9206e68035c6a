"""hugging_face engine (being written)."""
