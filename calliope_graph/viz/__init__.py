"""Drawings of flows and HTML reports of runs (being written)."""
