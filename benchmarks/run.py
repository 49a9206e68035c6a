"""Benchmarks (filled in by the flows issue)."""
