"""replicate engine (being written)."""
