"""The story flows shipped with calliope-graph, as YAML files loadable by name."""
