"""The Python front door: :class:`Flow` builds the same :class:`FlowSpec` a YAML file declares.

::

    flow = Flow("illustrate")
    text = flow.input("text", "text")
    image = flow.add("image", TextToImage("stability-core"), {"prompt": text})
    censor = flow.add("censor", CensorText())
    flow.rewrite(image, via=censor, port="prompt", when=["content_policy"], max_attempts=3)
    flow.output("image", image["image"])
    result = flow.invoke({"text": "a lighthouse"}, out_dir="out")

The constructs have their own spellings — ``flow.map(...)`` with ``flow.item(...)``,
``flow.switch(...)``, ``flow.subflow(...)`` — so everything a YAML flow says, Python says
(``tests/test_builder_parity.py`` builds every shipped flow both ways and compares them).

A flow loaded from YAML (:meth:`Flow.load`) is the same object, so both front doors share
validation, compilation, running and drawing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Coroutine, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from pydantic import ValidationError
from typing_extensions import Unpack

from calliope_graph.config import ModelConfig
from calliope_graph.errors import ConfigurationError, FlowSpecError
from calliope_graph.flow import _entry
from calliope_graph.flow.spec import (
    CONTINUE,
    INPUTS,
    CacheSpec,
    ErrorRoute,
    FlowSpec,
    InputSpec,
    MapSpec,
    NodeSpec,
    RetrySpec,
    RewriteSpec,
    load_spec,
    shipped_flows,
)
from calliope_graph.flow.validate import Plan, check

# Building, loading and validating a flow need neither LangGraph nor the runner: they load
# when a flow is compiled or run (`calliope-graph validate` starts fast).
if TYPE_CHECKING:
    from langgraph.cache.base import BaseCache
    from langgraph.types import Checkpointer

    from calliope_graph.batch import BatchOptions, BatchSummary
    from calliope_graph.context import StreamEvent
    from calliope_graph.flow._runtime import FlowEvent, OnEvent
    from calliope_graph.flow.compile import CompiledFlowGraph
    from calliope_graph.flow.run import FlowResult, FlowRunner, RunnerOptions, RunOptions
    from calliope_graph.nodes import Node

__all__ = ["Flow", "MapItem", "NodeHandle", "NodeOptions", "shipped_flows"]


class NodeHandle:
    """A node added to a flow: ``handle["text"]`` (or ``handle.text``) is ``"<node>.text"``;
    ``handle["object", "title"]`` reads a field of an object port (``"<node>.object.title"``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getitem__(self, port: str | tuple[str, ...]) -> str:
        path = port if isinstance(port, tuple) else (port,)
        return ".".join((self.name, *path))

    def __getattr__(self, port: str) -> str:
        if port.startswith("_"):
            raise AttributeError(port)
        return f"{self.name}.{port}"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class MapItem(NodeHandle):
    """The current item of a :meth:`Flow.map`: wire it whole (``{"value": scene}``) or one
    of its fields (``scene.text``, ``scene["image_prompt"]``). Made by :meth:`Flow.item`."""


class NodeOptions(TypedDict, total=False):
    """The keywords that configure a node itself (as in :meth:`Flow.add`)."""

    model: str | ModelConfig | None
    params: Mapping[str, Any] | None
    timeout: float | None
    retry: RetrySpec | Mapping[str, Any] | None
    cache: bool | CacheSpec
    description: str
    candidates: int | None


Source = str | NodeHandle | Sequence[str]
Target = str | NodeHandle


def _ref(value: Any) -> str | list[str]:
    if isinstance(value, MapItem):
        return value.name
    if isinstance(value, NodeHandle):
        raise FlowSpecError(
            f"Wire a port, not a node: write {value.name}['<port>'] (e.g. {value.name}['text'])."
        )
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return [str(_ref(v)) for v in value]
    raise FlowSpecError(f"Cannot wire {value!r}: pass 'inputs.<name>' or '<node>.<port>'.")


def _name(node: str | NodeHandle) -> str:
    return node.name if isinstance(node, NodeHandle) else node


def _map_spec(name: str, over: Any, item: str | MapItem, max_parallel: int | None) -> MapSpec:
    """A map's spec, its misuse named before the node is added."""
    if not isinstance(over, str):
        raise FlowSpecError(
            f"Map {name!r}: over= takes a list-typed value, '<node>.<port>[.<field>]' or "
            f"'inputs.<name>' (e.g. story['object', 'scenes']), not {over!r}."
        )
    if max_parallel is not None and not (isinstance(max_parallel, int) and max_parallel >= 1):
        raise FlowSpecError(
            f"Map {name!r}: max_parallel={max_parallel!r} must be a whole number ≥ 1 "
            "(or None: every item at once)."
        )
    as_ = item.name if isinstance(item, MapItem) else item
    try:
        return MapSpec.model_validate({"over": over, "as": as_, "max_parallel": max_parallel})
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise FlowSpecError(
            f"Map {name!r}: {problem} (item= names the current item, e.g. 'scene'; "
            "max_parallel is at most 1000)."
        ) from None


class Flow:
    """A story flow: build it here or load it from YAML; validate, run, draw."""

    def __init__(
        self,
        name: str,
        description: str = "",
        *,
        catalog: str | Path | None = None,
        spec: FlowSpec | None = None,
    ) -> None:
        """``catalog``: a YAML model catalog extending the built-in one (a path relative to
        the working directory; in a flow file, relative to that file)."""
        self._spec = (
            spec if spec is not None else FlowSpec(name=name, description=description, nodes={})
        )
        if catalog is not None:
            self._spec.catalog = str(catalog)
        self._plan: Plan | None = None
        #: How a parent flow names this one as a subflow (set when loaded from a file).
        self._reference: str | None = None

    # -- building ---------------------------------------------------------------------------
    def input(
        self,
        name: str,
        type: str = "text",
        *,
        items: str | None = None,
        required: bool = True,
        default: Any = None,
        description: str = "",
    ) -> str:
        """Declare a flow input; returns its reference (``"inputs.<name>"``). A list input
        names its item type: ``flow.input("prompts", "list", items="text")``."""
        if name in self._spec.inputs:
            raise FlowSpecError(f"Flow input {name!r} is declared twice.")
        declared: dict[str, Any] = {"type": type, "items": items} if items else {"type": type}
        try:
            self._spec.inputs[name] = InputSpec.model_validate(
                {**declared, "required": required, "default": default, "description": description}
            )
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise FlowSpecError(f"Flow input {name!r}: {problem}".replace(": : ", ": ")) from None
        self._changed()
        return f"{INPUTS}.{name}"

    def add(
        self,
        name: str,
        node: Node | Flow | str,
        inputs: Mapping[str, Source] | None = None,
        /,
        *,
        model: str | ModelConfig | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: RetrySpec | Mapping[str, Any] | None = None,
        cache: bool | CacheSpec = False,
        description: str = "",
        candidates: int | None = None,
    ) -> NodeHandle:
        """Add a node (an instance, a kind name with ``model``/``params``, or a loaded
        :class:`Flow` as a subflow — see :meth:`subflow`).

        ``inputs`` wires its input ports by name — ``{"prompt": text, "image": cam["image"]}``
        — from flow inputs or other nodes' ports; a list wires several sources into a
        ``many`` port. The keywords after it configure the node itself, so a port may be
        called anything (``model``, ``description``) without clashing with them.
        ``candidates=N`` (1–8) runs a generation node N times in parallel (distinct seeds
        where its model takes one): its ports become lists of N, for a ``choose`` node.
        """
        if name in self._spec.nodes:
            raise FlowSpecError(f"Node {name!r} is added twice: node names must be unique.")
        if inputs is not None and not isinstance(inputs, Mapping):
            raise FlowSpecError(
                f"Node {name!r}: wire inputs as a mapping from port name to source, e.g. "
                f"flow.add({name!r}, node, {{'prompt': 'inputs.text'}}), not {inputs!r}."
            )
        if isinstance(node, Flow):
            kind, node_model = "flow", model
            node_params = {"flow": node._subflow_reference(name), **(params or {})}
        elif isinstance(node, str):
            kind, node_model, node_params = node, model, dict(params or {})
        else:
            kind = node.kind
            node_model = model if model is not None else node.model
            # What was passed, even a default's value: the spec says what the YAML would.
            node_params = node.params.model_dump(exclude_unset=True)
            response_model = getattr(node, "response_model", None)
            inline = getattr(node, "inline_schema", None)
            if inline is not None:
                node_params["schema"] = inline
            elif isinstance(response_model, type):
                node_params["response_model"] = (
                    f"{response_model.__module__}:{response_model.__qualname__}"
                )
            node_params.update(params or {})
        self._spec.nodes[name] = NodeSpec(
            kind=kind,
            model=node_model,
            params=node_params,
            inputs={port: _ref(value) for port, value in (inputs or {}).items()},
            description=description,
            timeout=timeout,
            retry=RetrySpec.model_validate(retry) if isinstance(retry, Mapping) else retry,
            cache=cache,
            candidates=candidates,
        )
        self._changed()
        return NodeHandle(name)

    def item(self, name: str = "item") -> MapItem:
        """The name a map's current item goes by, to wire it into :meth:`map`'s inputs:
        ``scene = flow.item("scene")``, then ``{"text": scene.text}`` and ``item=scene``."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise FlowSpecError(
                f"A map item's name must be an identifier (letters, digits, '_'), not {name!r}: "
                "e.g. flow.item('scene')."
            )
        if name == INPUTS:
            raise FlowSpecError(f"A map item cannot be called {INPUTS!r}: pick another name.")
        return MapItem(name)

    def map(
        self,
        name: str,
        node: Node | Flow | str,
        inputs: Mapping[str, Source] | None = None,
        /,
        *,
        over: str,
        item: str | MapItem = "item",
        max_parallel: int | None = None,
        **options: Unpack[NodeOptions],
    ) -> NodeHandle:
        """Add a node that runs once per item of the list ``over`` (``story["object",
        "scenes"]`` or ``"inputs.<name>"``), items in parallel (at most ``max_parallel`` at
        once), results gathered in item order: each output port becomes a list. ``inputs``
        wires the current ``item`` (a :meth:`item`, or its name) or its fields; ``node`` and
        the keywords in ``options`` are as in :meth:`add` (a loaded Flow maps a subflow)."""
        spec = _map_spec(name, over, item, max_parallel)
        handle = self.add(name, node, inputs, **options)
        self._spec.nodes[name].map = spec
        self._changed()
        return handle

    def switch(
        self,
        name: str,
        value: str,
        /,
        *,
        cases: Mapping[str, Target] | Sequence[tuple[str, Target]],
        default: Target,
        description: str = "",
    ) -> NodeHandle:
        """A switch on ``value`` (a ``"<node>.<port>"`` or flow input): ``cases`` maps a
        JMESPath condition to the node it chooses, tried in order; ``default`` runs when none
        holds. The nodes not chosen are skipped (wire their outputs as a list to read
        whichever ran). Its outputs: ``value`` (unchanged) and ``branch`` (the chosen node)."""
        from calliope_graph.nodes import Switch

        pairs = list(cases.items()) if isinstance(cases, Mapping) else list(cases)
        if not pairs or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise FlowSpecError(
                f"Switch {name!r}: pass cases as a mapping from a JMESPath condition to the "
                f"node it chooses, e.g. cases={{\"@ == 'dark'\": night}}, not {cases!r}."
            )
        chosen = [{"when": when, "goto": _name(goto)} for when, goto in pairs]
        node = Switch(name=name, cases=chosen, default=_name(default))
        return self.add(name, node, {"value": value}, description=description)

    def subflow(
        self,
        name: str,
        flow: str | Path | Flow,
        inputs: Mapping[str, Source] | None = None,
        /,
        **options: Unpack[NodeOptions],
    ) -> NodeHandle:
        """Add another flow as one node: its inputs and outputs are this node's ports.
        ``flow`` is a shipped flow's name (``"illustrate"``), a .yaml/.json path (relative to
        the working directory: a flow built here has no file of its own), or a Flow loaded
        from either (:meth:`load`). To run it once per item, use :meth:`map` with
        ``Flow.load(...)`` as its node."""
        if isinstance(flow, Flow):
            return self.add(name, flow, inputs, **options)
        if not isinstance(flow, str | Path) or not str(flow):
            raise FlowSpecError(
                f"Subflow {name!r}: name a shipped flow, a .yaml/.json path or a loaded Flow, "
                f"not {flow!r}."
            )
        options["params"] = {"flow": str(flow), **(options.get("params") or {})}
        return self.add(name, "flow", inputs, **options)

    def fallback(
        self,
        node: str | NodeHandle,
        to: str | NodeHandle,
        *,
        when: Sequence[str] = ("any",),
        label: str | None = None,
    ) -> Flow:
        """A fallback edge: when ``node`` fails with ``when``, ``to`` runs in its place."""
        return self._route(node, {"when": list(when), "goto": _name(to), "label": label})

    def continue_on(
        self, node: str | NodeHandle, *, when: Sequence[str] = ("any",), label: str | None = None
    ) -> Flow:
        """When ``node`` fails with ``when``, go on without its outputs (a merge skips it)."""
        return self._route(node, {"when": list(when), "goto": CONTINUE, "label": label})

    def rewrite(
        self,
        node: str | NodeHandle,
        *,
        via: str | NodeHandle,
        port: str,
        when: Sequence[str] = ("content_policy",),
        max_attempts: int = 3,
        output: str | None = None,
        label: str | None = None,
    ) -> Flow:
        """Censor-and-retry: ``via`` rewrites input ``port`` of ``node``, which runs again."""
        rewrite = RewriteSpec(via=_name(via), port=port, output=output, max_attempts=max_attempts)
        return self._route(node, {"when": list(when), "rewrite": rewrite, "label": label})

    def output(self, name: str, source: str) -> Flow:
        """Declare a flow output read from ``"<node>.<port>"``."""
        if name in self._spec.outputs:
            raise FlowSpecError(f"Flow output {name!r} is declared twice.")
        self._spec.outputs[name] = str(_ref(source))
        self._changed()
        return self

    def _route(self, node: str | NodeHandle, route: dict[str, Any]) -> Flow:
        name = _name(node)
        if name not in self._spec.nodes:
            raise FlowSpecError(f"No node {name!r} to route from: add it first.")
        self._spec.nodes[name].on_error.append(ErrorRoute.model_validate(route))
        self._changed()
        return self

    def _changed(self) -> None:
        self._plan = None

    def _subflow_reference(self, node: str) -> str:
        if self._reference is None:
            raise FlowSpecError(
                f"Node {node!r}: flow {self.name!r} was built in Python, and a flow names its "
                "subflows by reference: pass a shipped flow's name or a .yaml/.json path, or "
                f"save it first (Path('{self.name}.yaml').write_text(flow.to_yaml())) and pass "
                "that path."
            )
        return self._reference

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: FlowSpec) -> Flow:
        return cls(spec.name, spec.description, spec=spec)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Flow:
        """A shipped flow by name (``webcam_story``) or a YAML/JSON file."""
        text = str(name_or_path)
        path = Path(text)
        if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
            flow = cls.from_spec(load_spec(path))
        elif text in (shipped := shipped_flows()):
            source = resources.files("calliope_graph.graphs").joinpath(f"{text}.yaml")
            flow = cls.from_spec(load_spec(f"{text}.yaml", text=source.read_text("utf-8")))
        else:
            raise FlowSpecError(
                f"No flow {text!r}: give a path to a .yaml/.json flow file or a shipped flow's "
                f"name ({', '.join(shipped)})."
            )
        flow._reference = text
        return flow

    # -- what it is -------------------------------------------------------------------------
    @property
    def spec(self) -> FlowSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    def validate(self) -> Flow:
        """Check the flow (a FlowSpecError names what is wrong); returns the flow."""
        self.plan()
        return self

    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = check(self._spec)
        return self._plan

    def to_yaml(self) -> str:
        return self._spec.to_yaml()

    def compile(
        self, *, checkpointer: Checkpointer = None, cache: BaseCache[Any] | None = None
    ) -> CompiledFlowGraph:
        """The LangGraph ``CompiledStateGraph``; its context is a ``FlowRuntime``."""
        from calliope_graph.flow.compile import compile_plan

        return compile_plan(self.plan(), checkpointer=checkpointer, cache=cache)

    def draw(self, format: str = "mermaid", **options: Any) -> str | bytes:
        """Draw the structure offline: mermaid, dot, ascii, svg or png
        (:func:`calliope_graph.viz.draw`)."""
        return _entry.draw()(self._spec, format, **options)

    # -- running ----------------------------------------------------------------------------
    def runner(self, **options: Unpack[RunnerOptions]) -> FlowRunner:
        """A reusable runner for many runs (compiled once, unless ``checkpointer=True``
        opens a SQLite saver in ``out_dir`` per run)."""
        from calliope_graph.flow.run import FlowRunner

        runner = FlowRunner(self.plan(), **options)
        runner.reference = self._reference  # a printed command names the flow as loaded
        return runner

    async def ainvoke(
        self, inputs: Mapping[str, Any] | None, **options: Unpack[RunOptions]
    ) -> FlowResult:
        """Run the flow on ``inputs`` (paths or media values for media inputs).

        Checkpoints go to ``out_dir/checkpoints.sqlite`` unless ``checkpointer`` is given;
        ``resume=True`` with the ``thread_id`` of a failed run continues it (a run paused for
        a person's choice raises WaitingForChoice: resume it with ``choices={node: index}``).
        ``simulator``
        runs every provider call offline; ``ctx`` passes a ready run context. Every option
        is described in :class:`~calliope_graph.flow.RunOptions`.
        """
        from calliope_graph.flow.run import split_options

        runner_options, call = split_options(options)
        runner = self.runner(**runner_options)
        try:
            return await runner.ainvoke(inputs, **call)
        finally:
            await runner.aclose()

    def invoke(self, inputs: Mapping[str, Any] | None, **options: Unpack[RunOptions]) -> FlowResult:
        """:meth:`ainvoke`, from synchronous code (not inside a running event loop)."""
        _no_running_loop("invoke", "ainvoke")
        return asyncio.run(self.ainvoke(inputs, **options))

    async def astream(
        self, inputs: Mapping[str, Any] | None, **options: Unpack[RunOptions]
    ) -> AsyncGenerator[FlowEvent | StreamEvent | FlowResult, None]:
        """Yield a :class:`FlowEvent` per node event as it happens (and a
        :class:`~calliope_graph.context.TokenEvent` per piece of text a node streams, a
        :class:`~calliope_graph.context.PreviewEvent` per partial image), then the
        FlowResult."""
        from calliope_graph.flow.run import stream_events

        extra = options.pop("on_event", None)

        def run(emit: OnEvent) -> Coroutine[Any, Any, FlowResult]:
            def both(event: FlowEvent) -> None:
                emit(event)
                if extra is not None:
                    extra(event)

            with_events: RunOptions = {**options, "on_event": both}
            return self.ainvoke(inputs, **with_events)

        async for item in stream_events(run):
            yield item

    def stream(
        self, inputs: Mapping[str, Any] | None, **options: Unpack[RunOptions]
    ) -> Iterator[FlowEvent | StreamEvent | FlowResult]:
        """:meth:`astream`, from synchronous code (events are yielded as they happen)."""
        _no_running_loop("stream", "astream")
        loop = asyncio.new_event_loop()
        agen = self.astream(inputs, **options)
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

    # -- many items (calliope_graph.batch) ----------------------------------------------------
    async def abatch(
        self,
        items: str | Path | Iterable[Mapping[str, Any]],
        *,
        out_dir: str | Path,
        **options: Unpack[BatchOptions],
    ) -> BatchSummary:
        """Run the flow over ``items`` (a .jsonl/.csv file, a folder of media, or a list of
        input mappings) into ``out_dir``: one thread per item, a manifest line per finished
        item (``out_dir/batch.jsonl``), outputs in ``out_dir/<item id>/``. ``resume=True``
        continues a stopped batch; see :class:`~calliope_graph.batch.BatchOptions`
        (:func:`calliope_graph.batch.run_batch`)."""
        return await _entry.run_batch()(self, items, out_dir, **options)

    def batch(
        self,
        items: str | Path | Iterable[Mapping[str, Any]],
        *,
        out_dir: str | Path,
        **options: Unpack[BatchOptions],
    ) -> BatchSummary:
        """:meth:`abatch`, from synchronous code (not inside a running event loop)."""
        _no_running_loop("batch", "abatch")
        return asyncio.run(self.abatch(items, out_dir=out_dir, **options))


def _no_running_loop(method: str, instead: str) -> None:
    """Refuse a blocking call where it would deadlock (Jupyter, an async application)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ConfigurationError(
        f"Flow.{method}() was called inside a running event loop (Jupyter, an async app), "
        f"where it cannot block: use `await flow.{instead}(...)` instead."
    )
