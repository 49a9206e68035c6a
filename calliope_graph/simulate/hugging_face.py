"""hugging_face simulator fake (being written)."""
