"""OpenTelemetry: every run is one trace — a span per run, per node execution (nested as the
flow nests) and per provider request with GenAI attributes, usage and cost — plus metrics;
nothing sensitive or heavy in any of it; nothing imported when it is off.

These tests install the SDK's in-memory exporter and reader as the application's providers
(what an application with its own ``TracerProvider`` does), and put the API's globals back
afterwards so the rest of the suite runs untraced.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import assert_secrets_absent, failures_under_faults, make_ctx
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from calliope_graph import _otel
from calliope_graph.batch import run_batch
from calliope_graph.context import RunContext
from calliope_graph.flow import Flow
from calliope_graph.nodes import (
    AnalyzeImage,
    ImageAndTextToVideo,
    TextToImage,
    TextToSpeech,
    TextToText,
)
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

HERE = Path(__file__).resolve().parent
WEBCAM = HERE.parent / "examples" / "media" / "webcam.jpg"


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


def _reset_globals() -> None:
    # The API allows one global provider per process; tests put it back (as OpenTelemetry's
    # own test suites do) so later tests run with telemetry off.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    from opentelemetry.metrics import _internal as metrics_internal

    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    _otel._configured = False
    _otel._instruments.clear()


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    telemetry = Telemetry()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(telemetry.spans))
    _reset_globals()
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[telemetry.reader]))
    try:
        yield telemetry
    finally:
        provider.shutdown()
        _reset_globals()


def _parent(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_run_is_one_trace_with_a_span_per_node_and_per_provider_call(
    otel: Telemetry, sim: Simulator, tmp_path: Path
) -> None:
    flow = Flow.load("webcam_story")
    runner = flow.runner(out_dir=tmp_path, simulator=sim)
    result = await runner.ainvoke({"image": str(WEBCAM)})
    await runner.aclose()
    spans = otel.finished()
    assert len({s.context.trace_id for s in spans}) == 1
    (run,) = [s for s in spans if s.parent is None]
    assert run.name == "flow webcam_story"
    nodes = [s for s in spans if s.name.startswith("node ")]
    executed = {e.node for e in result.trace.executions}
    assert {s.name.removeprefix("node ") for s in nodes} == executed
    assert all(_parent(s, spans) is run for s in nodes)
    calls = [s for s in spans if "gen_ai.operation.name" in _attributes(s)]
    assert len(calls) == sum(len(e.provider_calls) for e in result.trace.executions) >= 4
    for call in calls:
        attrs = _attributes(call)
        parent = _parent(call, spans)
        assert parent is not None and parent.name.startswith("node ")
        assert call.kind is trace.SpanKind.CLIENT
        assert attrs["gen_ai.provider.name"] and attrs["gen_ai.request.model"]
        assert attrs["gen_ai.usage.cost.amount"] > 0
        assert attrs["gen_ai.usage.cost.currency"] == "USD"
        assert call.name == f"{attrs['gen_ai.operation.name']} {attrs['gen_ai.request.model']}"
        times = (run.start_time, call.start_time, call.end_time, run.end_time)
        assert None not in times and list(times) == sorted(times)  # type: ignore[type-var]
    chat = next(s for s in calls if _attributes(s)["gen_ai.operation.name"] == "chat")
    attrs = _attributes(chat)
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.model"] == attrs["gen_ai.request.model"]  # as answered
    assert list(attrs["calliope.usage.reported"]) == ["input_tokens", "output_tokens"]
    image = next(s for s in calls if _attributes(s)["gen_ai.operation.name"] == "image_generation")
    assert list(_attributes(image)["calliope.usage.estimated"]) == ["images"]
    total = sum(_attributes(c)["gen_ai.usage.cost.amount"] for c in calls)
    assert _attributes(run)["calliope.cost.usd"] == pytest.approx(total)
    # Metrics per provider and model, and the cost counter.
    found = otel.metrics()
    durations = found["gen_ai.client.operation.duration"]
    assert {p.attributes["gen_ai.provider.name"] for p in durations} >= {"openai", "stability"}
    tokens = found["gen_ai.client.token.usage"]
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    assert sum(p.value for p in found["calliope.client.cost"]) == pytest.approx(total)


async def test_map_items_and_subflow_nodes_nest_under_their_parents(
    otel: Telemetry, sim: Simulator, tmp_path: Path
) -> None:
    runner = Flow.load("storyboard").runner(out_dir=tmp_path, simulator=sim)
    await runner.ainvoke({"premise": "a fox"})
    await runner.aclose()
    spans = otel.finished()
    images = [s for s in spans if re.fullmatch(r"node scenes\[\d\]/illustration/image", s.name)]
    assert len(images) >= 2
    for span in images:
        index = int(re.findall(r"\d", span.name)[0])
        subflow = _parent(span, spans)
        assert subflow is not None and subflow.name == f"node scenes[{index}]/illustration"
        item = _parent(subflow, spans)
        assert item is not None and item.name == "node scenes"
        assert _attributes(item)["calliope.item"] == index
        assert _attributes(span)["calliope.item"] == index
        (call,) = [s for s in spans if _parent(s, spans) is span]
        assert _attributes(call)["gen_ai.operation.name"] == "image_generation"


async def test_failures_retries_and_routes_are_on_the_spans(
    otel: Telemetry, sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    sim.add_fault(kind="rate_limit", provider="openai", retry_after=0.5, first_n=1)
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    flow = Flow("retry")
    text = flow.input("topic", "text")
    flow.output("text", flow.add("write", TextToText("openai-gpt-4o-mini"), {"text": text})["text"])
    runner = flow.runner(out_dir=tmp_path, ctx=ctx, checkpointer=False)
    await runner.ainvoke({"topic": "a fox"})
    await ctx.aclose()
    spans = otel.finished()
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert [_attributes(c).get("error.type") for c in calls] == ["rate_limit", None]
    assert _attributes(calls[0])["gen_ai.usage.cost.amount"] == 0.0
    node = next(s for s in spans if s.name == "node write")
    assert _attributes(node)["calliope.attempts"] == 2
    assert [e.name for e in node.events] == ["retry"]
    found = otel.metrics()
    (limited,) = found["calliope.client.rate_limited"]
    assert limited.value == 1 and limited.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    # The retry waited out the 429's cooldown on the shared limiter: the span and the
    # counter (per provider) say how long.
    waited = _attributes(node)["calliope.limiter.wait"]
    assert waited > 0
    (wait,) = found["calliope.limiter.wait"]
    assert wait.attributes["gen_ai.provider.name"] == "openai"
    assert wait.value == pytest.approx(waited)
    durations = found["gen_ai.client.operation.duration"]
    assert {p.attributes.get("error.type") for p in durations} == {"rate_limit", None}
    assert sum(p.count for p in durations) == 2  # both attempts, as a histogram


async def test_a_batch_items_traces_link_to_the_batch_span(
    otel: Telemetry, sim: Simulator, tmp_path: Path
) -> None:
    flow = Flow("batched")
    text = flow.input("topic", "text")
    flow.output("text", flow.add("write", TextToText("openai-gpt-4o-mini"), {"text": text})["text"])
    items = [{"topic": "a fox"}, {"topic": "a cat"}]
    await run_batch(flow, items, tmp_path / "out", simulator=sim, report=False)
    spans = otel.finished()
    (batch,) = [s for s in spans if s.name == "batch batched"]
    runs = [s for s in spans if s.name == "flow batched"]
    assert len(runs) == 2 and all(r.parent is None for r in runs)
    assert len({r.context.trace_id for r in runs} | {batch.context.trace_id}) == 3
    for run in runs:
        assert [link.context.span_id for link in run.links] == [batch.context.span_id]
    assert _attributes(batch)["calliope.batch.ok"] == 2


#: Each conversion of the newer providers: (kind, model, input ports, operation expected).
_NEW_PROVIDER_CALLS: list[tuple[str, Any, dict[str, str], str]] = [
    ("text_to_text", "google-gemini-flash", {"text": "text"}, "generate_content"),
    ("analyze_image", "google-gemini-flash", {"image": "image"}, "image_analysis"),
    ("audio_to_text", "google-gemini-flash", {"audio": "audio"}, "transcription"),
    ("text_to_image", "google-gemini-image", {"prompt": "text"}, "image_generation"),
    ("text_to_speech", "google-gemini-tts", {"text": "text"}, "speech_generation"),
    ("image_and_text_to_video", "google-veo", {"image": "image", "text": "text"},
     "video_generation"),
    ("text_to_image", "fal-flux-schnell", {"prompt": "text"}, "image_generation"),
    ("image_and_text_to_video", "fal-kling-video", {"image": "image", "text": "text"},
     "video_generation"),
    ("text_to_image", "luma-photon", {"prompt": "text"}, "image_generation"),
    ("image_and_text_to_video", "luma-ray-2", {"image": "image", "text": "text"},
     "video_generation"),
]  # fmt: skip


async def test_google_fal_and_luma_calls_carry_their_genai_operation_model_and_usage(
    otel: Telemetry, sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    from calliope_graph.config import catalog
    from calliope_graph.testing import wav_bytes

    media = "https://media.example.com/story"
    outputs = {"text_to_text": "text", "analyze_image": "analysis", "audio_to_text": "text",
               "text_to_image": "image", "text_to_speech": "audio",
               "image_and_text_to_video": "video"}  # fmt: skip
    for i, (kind, model, ports, operation) in enumerate(_NEW_PROVIDER_CALLS):
        ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / str(i))
        picture = ctx.store.write_bytes("frames/kite.png", image_bytes("a red kite", 320, 180))
        sim.serve_download(  # Luma fetches the start image from its public URL
            f"{media}/frames/kite.png",
            httpx.Response(
                200, content=Path(picture).read_bytes(), headers={"content-type": "image/png"}
            ),
        )
        voice = tmp_path / f"voice{i}.wav"
        voice.write_bytes(wav_bytes("the harbour at dawn", seconds=1.0))
        values = {"text": "the red kite dives over the harbour", "image": str(picture),
                  "audio": str(voice)}  # fmt: skip
        config = catalog.get(model)
        if model == "luma-ray-2":
            config = config.with_parameters(image_base_url=media)
        flow = Flow(f"one_{i}")
        wired = {port: flow.input(port, ptype) for port, ptype in ports.items()}
        flow.output("out", flow.add("node", kind, wired, model=config)[outputs[kind]])
        otel.spans.clear()
        try:
            inputs = {port: values[ptype] for port, ptype in ports.items()}
            await flow.ainvoke(inputs, out_dir=tmp_path / str(i), ctx=ctx)
        finally:
            await ctx.aclose()
        (call,) = [s for s in otel.finished() if s.kind is trace.SpanKind.CLIENT]
        attrs = _attributes(call)
        provider = config.model.provider
        assert attrs["gen_ai.operation.name"] == operation, model
        assert attrs["gen_ai.provider.name"] == {"google": "gcp.gemini"}.get(provider, provider)
        assert attrs["gen_ai.request.model"] == config.model.provider_model_name
        assert call.name == f"{operation} {config.model.provider_model_name}"
        if provider == "google" and kind != "image_and_text_to_video":  # generateContent
            assert attrs["gen_ai.response.model"] == config.model.provider_model_name
            assert attrs["gen_ai.usage.input_tokens"] > 0, model
            assert attrs["gen_ai.usage.output_tokens"] > 0, model
            assert {"input_tokens", "output_tokens"} <= set(attrs["calliope.usage.reported"])
        if kind == "analyze_image":
            assert attrs["gen_ai.usage.image.input_tokens"] == 258  # one inline image
        if kind == "text_to_speech":  # Gemini TTS has no list price here: unknown, not $0
            assert "gen_ai.usage.cost.amount" not in attrs
        else:
            assert attrs["gen_ai.usage.cost.amount"] > 0, model
        if kind == "image_and_text_to_video":
            assert attrs["calliope.usage.video_seconds"] > 0


# -- nothing sensitive or heavy, for every provider ------------------------------------------------
def _provider_flows(tmp: Path) -> dict[str, Flow]:
    photo = tmp / "photo.png"
    photo.write_bytes(image_bytes("a photo", 64, 64))
    made: dict[str, Flow] = {}

    def text(provider: str, model: str) -> None:
        flow = Flow(provider)
        topic = flow.input("topic", "text")
        flow.output("out", flow.add("node", TextToText(model), {"text": topic})["text"])
        made[provider] = flow

    text("openai", "openai-gpt-4o-mini")
    text("anthropic", "anthropic-claude-haiku")
    text("hugging_face", "huggingface-mistral-7b")
    text("replicate", "replicate-llama-3")
    flow = Flow("stability")
    topic = flow.input("topic", "text")
    flow.output("out", flow.add("node", TextToImage("stability-core"), {"prompt": topic})["image"])
    made["stability"] = flow
    flow = Flow("elevenlabs")
    topic = flow.input("topic", "text")
    node = flow.add("node", TextToSpeech("elevenlabs-flash-v2.5"), {"text": topic})
    flow.output("out", node["audio"])
    made["elevenlabs"] = flow
    flow = Flow("azure_vision")
    flow.input("topic", "text")
    picture = flow.input("image", "image")
    node = flow.add("node", AnalyzeImage("azure-vision-4.0"), {"image": picture})
    flow.output("out", node["analysis"])
    made["azure_vision"] = flow
    flow = Flow("runway")
    topic = flow.input("topic", "text")
    picture = flow.input("image", "image")
    node = flow.add(
        "node", ImageAndTextToVideo("runway-gen4-turbo"), {"image": picture, "text": topic}
    )
    flow.output("out", node["video"])
    made["runway"] = flow
    for provider, model in (("fal", "fal-flux-schnell"), ("luma", "luma-photon")):
        flow = Flow(provider)
        topic = flow.input("topic", "text")
        flow.output("out", flow.add("node", TextToImage(model), {"prompt": topic})["image"])
        made[provider] = flow
    text("google", "google-gemini-flash")
    return made


def _everything(spans: list[ReadableSpan]) -> list[str]:
    """Every attribute and event value of every span, as text."""
    texts: list[str] = []
    for span in spans:
        texts.append(span.name)
        for key, value in _attributes(span).items():
            shown = (
                value
                if isinstance(value, str)
                else json.dumps(list(value) if isinstance(value, tuple) else value)
            )
            texts.append(f"{key}={shown}")
        for event in span.events:
            texts.append(event.name + json.dumps(dict(event.attributes or {})))
        texts.append(str(span.status.description))
    return texts


async def test_no_key_media_bytes_or_base64_reach_telemetry_for_any_provider(
    otel: Telemetry,
    sim: Simulator,
    clock: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    secrets: list[str] = []
    failures: list[Exception] = []
    for provider, flow in _provider_flows(tmp_path).items():
        wrong = f"wrong-{provider}-SECRET-0123456789abcdef"
        bad_keys = sim.keys(**{_key_field(provider): wrong})
        secrets += [wrong, sim.key_for(provider)]
        bad = make_ctx(sim.transport(), bad_keys, clock, tmp_path / provider)
        good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / provider)

        async def run(ctx: RunContext, flow: Flow = flow, provider: str = provider) -> Any:
            runner = flow.runner(out_dir=ctx.store.root, ctx=ctx, checkpointer=False)
            inputs = {"topic": f"a fox that knows {sim.key_for(provider)}"}
            if provider in ("azure_vision", "runway"):
                inputs["image"] = str(tmp_path / "photo.png")
            return await runner.ainvoke(inputs)

        try:
            failures += await failures_under_faults(sim, provider, bad, good, run)
            await run(good)  # and a run that succeeds, its content captured
        finally:
            await bad.aclose()
            await good.aclose()
    spans = otel.finished()
    assert {_attributes(s).get("gen_ai.provider.name") for s in spans} >= {
        "openai",
        "anthropic",
        "stability",
        "replicate",
        "runway",
        "azure_vision",
        "hugging_face",
        "elevenlabs",
        "gcp.gemini",
        "fal",
        "luma",
    }
    texts = _everything(spans)
    captured = [t for t in texts if "gen_ai.input.messages" in t or '"parts"' in t]
    assert captured  # content was captured (the switch is on) ...
    for text in texts:
        for secret in secrets:
            assert secret not in text
        assert not re.search(r"[A-Za-z0-9+/=]{200,}", text)  # ... with no base64
        assert "data:image" not in text and "\\x89PNG" not in text
    media = [t for t in texts if '"type": "uri"' in t]
    assert media  # media is named by its path, never carried
    assert_secrets_absent(secrets, failures, caplog.records)


def _key_field(provider: str) -> str:
    return {
        "openai": "openai_api_key",
        "anthropic": "anthropic_api_key",
        "stability": "stability_api_key",
        "replicate": "replicate_api_token",
        "runway": "runway_api_key",
        "azure_vision": "azure_vision_key",
        "hugging_face": "huggingface_api_key",
        "elevenlabs": "elevenlabs_api_key",
        "google": "google_api_key",
        "fal": "fal_api_key",
        "luma": "luma_api_key",
    }[provider]


def test_content_is_left_out_unless_asked_for(otel: Telemetry, tmp_path: Path) -> None:
    sim = Simulator()
    flow = Flow.load("webcam_story")
    flow.invoke({"image": str(WEBCAM)}, out_dir=tmp_path, simulator=sim)
    for span in otel.finished():
        assert "gen_ai.input.messages" not in _attributes(span)
        assert "gen_ai.output.messages" not in _attributes(span)


# -- off: nothing imported -------------------------------------------------------------------------
def test_with_telemetry_off_a_run_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    # langsmith (under langchain-core) imports parts of the API itself when it is installed;
    # a run with telemetry off must add nothing to that, and our layer stays unimported. The
    # package loads LangGraph and LangChain only when a flow runs, so they are loaded first.
    code = f"""
import sys
import langchain_core.messages, langchain_core.runnables, langgraph.graph, langsmith
from calliope_graph.flow import Flow
from calliope_graph.simulate import Simulator
before = {{m for m in sys.modules if m.startswith("opentelemetry")}}
flow = Flow.load("webcam_story")
flow.invoke({{"image": {str(WEBCAM)!r}}}, out_dir={str(tmp_path)!r}, simulator=Simulator())
after = {{m for m in sys.modules if m.startswith("opentelemetry")}}
print(sorted(after - before), "calliope_graph._otel" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[] False"


async def test_a_run_served_by_langgraph_server_is_traced_the_same_way(
    otel: Telemetry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from calliope_graph.serve import ServeContext, ServeSettings, serve_graph

    monkeypatch.setenv("LANGGRAPH_API_URL", "http://127.0.0.1:9")
    graph = serve_graph("webcam_story", ServeSettings(media_root=tmp_path, simulate=True))
    config: Any = {"configurable": {"thread_id": "t-1"}}
    image = "data:image/jpeg;base64," + base64.b64encode(WEBCAM.read_bytes()).decode()
    await graph.ainvoke({"image": image}, config, context=ServeContext())
    spans = otel.finished()
    (run,) = [s for s in spans if s.name == "flow webcam_story"]
    assert _attributes(run)["calliope.thread_id"] == "t-1"
    assert len({s.context.trace_id for s in spans}) == 1
    calls = [s for s in spans if "gen_ai.operation.name" in _attributes(s)]
    assert len(calls) >= 4 and all(_attributes(c)["gen_ai.usage.cost.amount"] > 0 for c in calls)
    assert not any(re.search(r"[A-Za-z0-9+/=]{200,}", t) for t in _everything(spans))


async def test_a_failed_node_a_fallback_takes_counts_its_limiter_wait_once(
    otel: Telemetry, sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    from calliope_graph.nodes import PromptTemplate

    sim.add_fault(kind="rate_limit", provider="openai", retry_after=0.5)  # every attempt
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    flow = Flow("routed")
    text = flow.input("topic", "text")
    story = flow.add("write", TextToText("openai-gpt-4o-mini"), {"text": text})
    backup = flow.add("backup", PromptTemplate(template="{text}"), {"text": text})
    flow.fallback(story, to=backup, when=["provider"])
    flow.output("text", story["text"])
    runner = flow.runner(out_dir=tmp_path, ctx=ctx, checkpointer=False)
    result = await runner.ainvoke({"topic": "a fox"})
    await ctx.aclose()
    (write,) = [e for e in result.trace.executions if e.node == "write"]
    assert write.branch == "fallback:backup" and write.limit_wait > 0
    (node,) = [s for s in otel.finished() if s.name == "node write"]
    assert _attributes(node)["calliope.route"] == "fallback:backup"
    (wait,) = otel.metrics()["calliope.limiter.wait"]
    assert wait.value == pytest.approx(
        write.limit_wait
    )  # not once at the failure, again at the route


def test_console_traces_alone_print_spans_without_trying_a_metrics_collector(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "stories"}
    command = [sys.executable, "-c", "from calliope_graph.cli import main; main()", "run",
               "webcam_story", "--simulate", "--out", str(tmp_path / "out"), "--input",
               f"image={WEBCAM}"]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=HERE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"name": "flow webcam_story"' in done.stdout
    assert '"service.name": "stories"' in done.stdout
    assert "metrics" not in done.stderr  # no OTLP exporter retrying localhost:4318


def test_a_new_tracer_provider_never_inherits_a_freed_ones_tracer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tracers are cached per provider: a provider shut down and freed can leave its address
    (its ``id``) to a new one, whose spans must still be exported, not handed to the old,
    shut-down provider's tracer (an application replacing its provider, or a test suite).
    Every provider is given the same id here, which is what an address reused looks like."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setattr(_otel, "id", lambda _obj: 7, raising=False)
    holder: list[Any] = [TracerProvider()]
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: holder[0])
    _otel._tracer()
    holder[0].shutdown()
    holder[0] = TracerProvider()
    exported = InMemorySpanExporter()
    holder[0].add_span_processor(SimpleSpanProcessor(exported))
    _otel._tracer().start_span("a node").end()
    assert [span.name for span in exported.get_finished_spans()] == ["a node"]


def _shape(spans: list[ReadableSpan]) -> list[tuple[Any, ...]]:
    """What a backend shows of a run's spans, without ids, times, the thread and which map
    item is which (the items run in parallel: which one meets a fault varies)."""
    by_id = {s.context.span_id: s for s in spans}
    varying = {
        "calliope.thread_id",
        "gen_ai.conversation.id",
        "calliope.limiter.wait",
        "calliope.item",
    }

    def any_item(value: Any) -> Any:
        return re.sub(r"\[\d+\]", "[i]", value) if isinstance(value, str) else value

    shape = []
    for span in spans:
        parent = by_id.get(span.parent.span_id) if span.parent else None
        attributes = {
            k: tuple(v) if isinstance(v, list | tuple) else any_item(v)
            for k, v in _attributes(span).items()
            if k not in varying
        }
        shape.append(
            (
                any_item(span.name),
                any_item(parent.name) if parent else None,
                span.kind,
                span.status.status_code,
                tuple(sorted(attributes.items())),
                tuple(e.name for e in span.events),
                int(span.context.trace_flags),
                len(span.links),
                span.instrumentation_scope,
                span.resource,
            )
        )
    return sorted(shape, key=repr)


async def test_node_spans_written_directly_equal_those_the_sdk_tracer_makes(
    otel: Telemetry, sim: Simulator, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the SDK's tracer, node and request spans are written in one step when they end
    (calliope_graph/_otel_spans.py): a backend sees exactly what ``start_span`` would give."""
    from calliope_graph import _otel_spans

    made: list[str] = []
    real = _otel_spans.span_maker

    def recorded(tracer: Any) -> Any:
        maker = real(tracer)
        made.append(type(maker).__name__)
        return maker

    sim.add_fault(kind="rate_limit", provider="stability", retry_after=0.5, first_n=1)
    monkeypatch.setattr(_otel, "span_maker", recorded)
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / "written")
    runner = Flow.load("storyboard").runner(out_dir=tmp_path / "written", ctx=ctx)
    await runner.ainvoke({"premise": "a fox"})
    await ctx.aclose()
    written = otel.finished()
    otel.spans.clear()
    sim.add_fault(kind="rate_limit", provider="stability", retry_after=0.5, first_n=1)
    monkeypatch.setattr(_otel, "span_maker", lambda tracer: _otel_spans.SpanMaker(tracer))
    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / "api")
    runner = Flow.load("storyboard").runner(out_dir=tmp_path / "api", ctx=ctx)
    await runner.ainvoke({"premise": "a fox"})
    await ctx.aclose()
    through_api = otel.finished()
    assert made and set(made) == {"_Writer"}
    assert len(written) == len(through_api) > 10
    assert any(e.name == "retry" for s in written for e in s.events)
    assert _shape(written) == _shape(through_api)


async def test_a_span_processor_sees_every_span_start_and_what_it_adds_is_exported(
    otel: Telemetry, sim: Simulator, tmp_path: Path
) -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    class Tenant(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            span.set_attribute("tenant", "studio-7")

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(Tenant())
    runner = Flow.load("webcam_story").runner(out_dir=tmp_path, simulator=sim)
    await runner.ainvoke({"image": str(WEBCAM)})
    await runner.aclose()
    spans = otel.finished()
    assert len(spans) > 8
    assert {_attributes(s).get("tenant") for s in spans} == {"studio-7"}


async def test_a_sampler_of_the_applications_own_decides_each_node_span(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sampler that does not simply follow the run's decision is asked for every span
    (the spans then go through the tracer), and one that samples nothing gets nothing."""
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
    )

    class NoMerges(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any,
                          **kwargs: Any) -> SamplingResult:  # fmt: skip
            drop = name.startswith("node merge")
            return SamplingResult(Decision.DROP if drop else Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "NoMerges"

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    found: dict[str, list[str]] = {}
    for label, sampler in (("own", NoMerges()), ("none", ParentBased(ALWAYS_OFF))):
        exported = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(exported))
        _reset_globals()
        trace.set_tracer_provider(provider)
        try:
            runner = Flow.load("webcam_story").runner(out_dir=tmp_path / label, simulator=sim)
            result = await runner.ainvoke({"image": str(WEBCAM)})
            await runner.aclose()
            assert result.trace.status == "ok"
            found[label] = [s.name for s in exported.get_finished_spans()]
        finally:
            provider.shutdown()
            _reset_globals()
    assert "node merge" not in found["own"]
    assert "node story" in found["own"] and "flow webcam_story" in found["own"]
    assert found["none"] == []
