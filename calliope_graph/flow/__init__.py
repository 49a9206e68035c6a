"""Flows: the builder, the declarative spec, validation, compilation to LangGraph, running."""

from typing import TYPE_CHECKING

from calliope_graph._lazy import exports

# Loaded on first use (calliope_graph/_lazy.py): LangGraph only when something needs it.
if TYPE_CHECKING:
    from calliope_graph.flow._runtime import EventKind, FlowEvent, FlowRuntime, OnEvent
    from calliope_graph.flow.builder import Flow, NodeHandle, shipped_flows
    from calliope_graph.flow.compile import CompiledFlowGraph
    from calliope_graph.flow.run import (
        Durability,
        FlowResult,
        FlowRunner,
        RunnerOptions,
        RunOptions,
    )
    from calliope_graph.flow.spec import FlowSpec, load_spec
    from calliope_graph.flow.trace import NodeExecution, Trace
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.flow._runtime": ["EventKind", "FlowEvent", "FlowRuntime", "OnEvent"],
            "calliope_graph.flow.builder": ["Flow", "NodeHandle", "shipped_flows"],
            "calliope_graph.flow.compile": ["CompiledFlowGraph"],
            "calliope_graph.flow.run": [
                "Durability",
                "FlowResult",
                "FlowRunner",
                "RunnerOptions",
                "RunOptions",
            ],
            "calliope_graph.flow.spec": ["FlowSpec", "load_spec"],
            "calliope_graph.flow.trace": ["NodeExecution", "Trace"],
        },
    )

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
