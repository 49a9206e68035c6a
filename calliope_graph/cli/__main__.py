"""``python -m calliope_graph.cli``: the same as ``calliope-graph``."""

from calliope_graph.cli import main

main()
