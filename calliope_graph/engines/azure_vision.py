"""azure_vision engine (being written)."""
