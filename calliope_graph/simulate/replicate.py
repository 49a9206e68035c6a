"""replicate simulator fake (being written)."""
