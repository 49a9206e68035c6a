"""Flows: the builder, the declarative spec, validation, compilation to LangGraph, running."""

from calliope_graph.flow._runtime import EventKind, FlowEvent, FlowRuntime, OnEvent
from calliope_graph.flow.builder import Flow, NodeHandle, shipped_flows
from calliope_graph.flow.compile import CompiledFlowGraph
from calliope_graph.flow.run import Durability, FlowResult, FlowRunner, RunnerOptions, RunOptions
from calliope_graph.flow.spec import FlowSpec, load_spec
from calliope_graph.flow.trace import NodeExecution, Trace

__all__ = [
    "CompiledFlowGraph",
    "Durability",
    "EventKind",
    "Flow",
    "FlowEvent",
    "FlowResult",
    "FlowRunner",
    "FlowRuntime",
    "FlowSpec",
    "NodeExecution",
    "NodeHandle",
    "OnEvent",
    "RunOptions",
    "RunnerOptions",
    "Trace",
    "load_spec",
    "shipped_flows",
]
