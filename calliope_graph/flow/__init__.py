"""Flows: the builder, the declarative spec, validation, compilation to LangGraph, running."""

from calliope_graph.flow.spec import FlowSpec, load_spec
from calliope_graph.flow.trace import NodeExecution, Trace

__all__ = ["FlowSpec", "NodeExecution", "Trace", "load_spec"]
