"""Flows: the builder, the declarative spec, validation, compilation to LangGraph, running."""

from calliope_graph.flow.builder import Flow, NodeHandle, shipped_flows
from calliope_graph.flow.run import FlowEvent, FlowResult, FlowRunner, FlowRuntime
from calliope_graph.flow.spec import FlowSpec, load_spec
from calliope_graph.flow.trace import NodeExecution, Trace

__all__ = [
    "Flow",
    "FlowEvent",
    "FlowResult",
    "FlowRunner",
    "FlowRuntime",
    "FlowSpec",
    "NodeExecution",
    "NodeHandle",
    "Trace",
    "load_spec",
    "shipped_flows",
]
