"""Streaming text: token events before a node finishes, from every provider that streams.

The fakes stream in each provider's own SSE format (checked here against the official
SDKs' event types), wait the configured time to first token, and can break a stream
mid-way; a broken attempt is retried and its partial text discarded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Clock
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk

from calliope_graph.config import InferenceModel, ModelConfig
from calliope_graph.context import RunContext, StreamEvent, TokenEvent, streaming, token_sink
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines._stream import Tokens, sse_events
from calliope_graph.engines.langchain import register_chat_model, unregister_chat_model
from calliope_graph.errors import EmptyOutputError
from calliope_graph.flow import Flow, FlowEvent, FlowResult
from calliope_graph.nodes import TextToText
from calliope_graph.simulate import Simulator, parse_faults

PROMPT = "A fox finds a lantern."
MODELS = ("openai-gpt-6-luna", "anthropic-claude-haiku", "google-gemini-flash")


def story(model: str | ModelConfig) -> Flow:
    flow = Flow("story")
    text = flow.input("text", "text")
    node = flow.add("story", TextToText(model), {"text": text})
    flow.output("text", node["text"])
    return flow


async def run(flow: Flow, sim: Simulator, tmp_path: Path) -> list[Any]:
    sleep = sim.sleep  # the test's virtual clock: retries wait on it too
    ctx = RunContext.create(tmp_path, keys=sim.keys(), transport=sim.transport(), sleep=sleep)
    try:
        return [
            item
            async for item in flow.astream(
                {"text": PROMPT}, out_dir=tmp_path, ctx=ctx, checkpointer=False
            )
        ]
    finally:
        await ctx.aclose()


@pytest.mark.parametrize("model", MODELS)
async def test_astream_yields_tokens_before_the_node_finishes(
    model: str, tmp_path: Path, clock: Clock
) -> None:
    items = await run(story(model), Simulator(sleep=clock), tmp_path)
    kinds = [i.kind for i in items if isinstance(i, FlowEvent | TokenEvent)]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    tokens = [i for i in items if isinstance(i, TokenEvent)]
    assert len(tokens) > 1 and all(t.kind == "token" for t in tokens)
    assert {(t.node, t.attempt) for t in tokens} == {("story", 1)}
    result = items[-1]
    assert isinstance(result, FlowResult)
    assert "".join(t.text for t in tokens).strip() == result.outputs["text"]
    # usage reported in the stream is recorded: the call is priced from it
    (execution,) = result.trace.executions
    (call,) = execution.provider_calls
    assert call.usage.get("input_tokens") and call.usage.get("output_tokens")


@pytest.mark.parametrize("model", MODELS)
async def test_the_first_token_waits_the_time_to_first_token(
    model: str, tmp_path: Path, clock: Clock
) -> None:
    provider = model.split("-")[0]
    sim = Simulator(sleep=clock, latency={f"{provider}:ttft": 0.75, "token": 0.01})
    ctx = RunContext.create(tmp_path, keys=sim.keys(), transport=sim.transport(), sleep=clock)
    config = ctx.catalog.get(model)
    seen: list[float] = []
    reset = token_sink.set(lambda event: seen.append(clock.now))
    try:
        with streaming("story"):
            await get_engine(Conversion.TEXT_TO_TEXT, config.provider)(ctx, PROMPT, config)
    finally:
        token_sink.reset(reset)
        await ctx.aclose()
    assert len(seen) > 1 and seen[0] == pytest.approx(0.75)
    assert seen[1] == pytest.approx(0.76)


@pytest.mark.parametrize("model", MODELS)
async def test_a_stream_broken_mid_way_is_discarded_and_retried(
    model: str, tmp_path: Path, clock: Clock
) -> None:
    provider = model.split("-")[0]
    sim = Simulator(sleep=clock, faults=parse_faults(f"stream_break@{provider}:first_n=1"))
    items = await run(story(model), sim, tmp_path)
    events = [i for i in items if isinstance(i, TokenEvent)]
    discard = [e for e in events if e.kind == "discard"]
    assert len(discard) == 1 and discard[0].attempt == 1
    assert discard[0].reason == "transient"
    first = [e for e in events if e.attempt == 1 and e.kind == "token"]
    second = [e for e in events if e.attempt == 2]
    assert first and second and events.index(discard[0]) == len(first)
    result = items[-1]
    assert isinstance(result, FlowResult)
    assert "".join(e.text for e in second).strip() == result.outputs["text"]


async def test_a_broken_stream_falls_back_and_the_consumer_is_told(
    tmp_path: Path, clock: Clock
) -> None:
    flow = Flow("story")
    text = flow.input("text", "text")
    node = flow.add("story", TextToText("openai-gpt-6-luna"), {"text": text})
    backup = flow.add("backup", TextToText("anthropic-claude-haiku"), {"text": text})
    flow.fallback(node, to=backup, when=["any"])
    flow.output("text", node["text"])
    sim = Simulator(sleep=clock, faults=parse_faults("stream_break@openai"))
    items = await run(flow, sim, tmp_path)
    tokens = [i for i in items if isinstance(i, TokenEvent)]
    assert {t.node for t in tokens if t.kind == "discard"} == {"story"}
    assert tokens[-1].node == "backup" and tokens[-1].kind == "token"
    result = items[-1]
    assert isinstance(result, FlowResult)
    kept = "".join(t.text for t in tokens if t.node == "backup")
    assert kept.strip() == result.outputs["text"]


async def test_nobody_listening_sends_no_stream(ctx: RunContext, sim: Simulator) -> None:
    engine = get_engine(Conversion.TEXT_TO_TEXT, "openai")
    config = ctx.catalog.get("openai-gpt-6-luna")
    with streaming("story"):  # a node asks, but no sink and no messages mode
        text = await engine(ctx, PROMPT, config)
    assert text and sim.count("openai") == 1


async def test_stream_false_in_the_model_config_turns_it_off(
    ctx: RunContext, sim: Simulator
) -> None:
    config = ctx.catalog.get("openai-gpt-6-luna")
    config = config.model_copy(update={"model_parameters": {"stream": False}})
    events: list[StreamEvent] = []  # what a token sink receives
    reset = token_sink.set(events.append)
    try:
        with streaming("story"):
            await get_engine(Conversion.TEXT_TO_TEXT, "openai")(ctx, PROMPT, config)
    finally:
        token_sink.reset(reset)
    assert events == []


# -- the fakes' wire formats, read with the official SDKs' types ------------------------------
async def _events(sim: Simulator, url: str, body: dict[str, Any], **kw: Any) -> list[Any]:
    headers = {
        "api.openai.com": {"authorization": f"Bearer {sim.key_for('openai')}"},
        "api.anthropic.com": {
            "x-api-key": sim.key_for("anthropic"),
            "anthropic-version": "2023-06-01",
        },
        "generativelanguage.googleapis.com": {"x-goog-api-key": sim.key_for("google")},
    }[httpx.URL(url).host]
    async with (
        sim.client() as client,
        client.stream("POST", url, json=body, headers=headers, **kw) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [e async for e in sse_events(response)]


async def test_the_openai_stream_parses_with_the_sdk(clock: Clock) -> None:
    from openai.types.chat import ChatCompletionChunk

    events = await _events(
        Simulator(sleep=clock),
        "https://api.openai.com/v1/chat/completions",
        {
            "model": "gpt-6-luna",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert events[-1].data == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e.json()) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


async def test_the_anthropic_stream_parses_with_the_sdk(clock: Clock) -> None:
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    events = await _events(
        Simulator(sleep=clock),
        "https://api.anthropic.com/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
        },
    )
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    parsed = [e for e in events if e.event != "ping"]
    for event in parsed:
        assert adapter.validate_python(event.json()).type == event.event
    names = [e.event for e in parsed]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in names


async def test_the_gemini_stream_parses_with_the_sdk(clock: Clock) -> None:
    from google.genai.types import GenerateContentResponse

    events = await _events(
        Simulator(sleep=clock),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent",
        {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
        params={"alt": "sse"},
    )
    chunks = [GenerateContentResponse.model_validate(e.json()) for e in events]
    assert len(chunks) > 1 and chunks[-1].usage_metadata is not None
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == "STOP"


async def test_the_anthropic_fake_refuses_a_stream_that_is_not_a_boolean(clock: Clock) -> None:
    sim = Simulator(sleep=clock)
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "stream": "yes",
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-api-key": sim.key_for("anthropic"), "anthropic-version": "2023-06-01"}
    async with sim.client() as client:
        response = await client.post(
            "https://api.anthropic.com/v1/messages", json=body, headers=headers
        )
    assert response.status_code == 400 and "boolean" in json.dumps(response.json())


# -- LangChain chat models, and LangGraph's messages mode ---------------------------------------
async def test_a_langchain_chat_model_streams_tokens(tmp_path: Path, clock: Clock) -> None:
    chunks = iter([AIMessage("Once upon a time, a fox found a lantern.")])
    register_chat_model("fake-streamer", GenericFakeChatModel(messages=chunks))
    try:
        flow = story(
            ModelConfig(
                slug="lc-streamer",
                description="",
                model=InferenceModel(
                    slug="lc-streamer", provider="langchain", provider_model_name="fake-streamer"
                ),
            )
        )
        items = await run(flow, Simulator(sleep=clock), tmp_path)
    finally:
        unregister_chat_model("fake-streamer")
    tokens = [i for i in items if isinstance(i, TokenEvent)]
    assert len(tokens) > 1
    result = items[-1]
    assert isinstance(result, FlowResult)
    assert "".join(t.text for t in tokens) == result.outputs["text"]


async def test_langgraph_messages_mode_yields_chunks(tmp_path: Path, clock: Clock) -> None:
    from calliope_graph.flow._runtime import FlowRuntime
    from calliope_graph.flow.trace import Trace

    sim = Simulator(sleep=clock)
    flow = story("openai-gpt-6-luna")
    graph = flow.compile()
    ctx = RunContext.create(tmp_path, keys=sim.keys(), transport=sim.transport(), sleep=clock)
    runtime = FlowRuntime(ctx=ctx, trace=Trace(flow="story", thread_id="t", started_at=0.0))
    chunks: list[AIMessageChunk] = []
    async for item in graph.astream(
        {"inputs.text": PROMPT}, context=runtime, stream_mode="messages"
    ):
        message, meta = item
        assert meta["langgraph_node"]  # type: ignore[index]
        if isinstance(message, AIMessageChunk):
            chunks.append(message)
    await ctx.aclose()
    assert len(chunks) > 1 and len({c.id for c in chunks}) == 1
    assert "".join(str(c.content) for c in chunks).strip()


async def test_a_node_that_refuses_the_streamed_text_tells_the_consumer(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = Flow("story")
    text = flow.input("text", "text")
    node = flow.add("story", TextToText("openai-gpt-6-luna", empty_is_error=True), {"text": text})
    backup = flow.add("backup", TextToText("anthropic-claude-haiku"), {"text": text})
    flow.fallback(node, to=backup, when=["empty"])
    flow.output("text", node["text"])
    sim = Simulator(sleep=clock)
    # the model streams only whitespace: the node refuses it after the stream ended well
    original = TextToText.run

    async def whitespace(self: TextToText, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        if self.name != "story":
            return await original(self, ctx, **inputs)
        with streaming(self.name):
            await Tokens(1).token("   ")
            raise EmptyOutputError("only whitespace")

    monkeypatch.setattr(TextToText, "run", whitespace)
    items = await run(flow, sim, tmp_path)
    events = [i for i in items if isinstance(i, TokenEvent)]
    assert events[0].node == "story" and events[0].kind == "token"
    assert events[1].kind == "discard" and events[1].node == "story"
    assert events[1].reason == "empty"
    assert all(e.node == "backup" for e in events[2:])
