"""Partial images: an OpenAI GPT image node with ``previews`` streams them while it draws.

Each arrives as a ``preview`` event holding a media reference (the saved file), before the
node finishes; the final image is the node's output as before. Nobody listening, the request
is the unstreamed one. The fake's events are read with the ``openai`` SDK's own types.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder
from conftest import Clock

from calliope_graph.context import (
    PreviewEvent,
    RunContext,
    TokenEvent,
    streaming,
    token_sink,
)
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines._openai_image_stream import _Previews, _read
from calliope_graph.engines._stream import sse_events
from calliope_graph.flow import Flow, FlowEvent, FlowResult
from calliope_graph.media import Image
from calliope_graph.nodes import TextToImage
from calliope_graph.simulate import Simulator, parse_faults
from calliope_graph.testing import image_bytes

PROMPT = "a red kite over a harbour"


def picture(model: str = "openai-gpt-image-2", previews: int = 2) -> Flow:
    flow = Flow("picture")
    text = flow.input("text", "text")
    node = flow.add("picture", TextToImage(model, previews=previews), {"prompt": text})
    flow.output("image", node["image"])
    return flow


async def run(
    flow: Flow, sim: Simulator, clock: Clock, out: Path, rec: Recorder | None = None
) -> list[Any]:
    transport = httpx.MockTransport(rec) if rec is not None else sim.transport()
    ctx = RunContext.create(out, keys=sim.keys(), transport=transport, sleep=clock)
    try:
        return [
            item
            async for item in flow.astream(
                {"text": PROMPT}, out_dir=out, ctx=ctx, checkpointer=False
            )
        ]
    finally:
        await ctx.aclose()


async def test_previews_arrive_as_media_references_before_the_node_finishes(
    tmp_path: Path, clock: Clock, sim: Simulator
) -> None:
    rec = Recorder(sim)
    items = await run(picture(), sim, clock, tmp_path / "out", rec)
    kinds = [i.kind for i in items if isinstance(i, FlowEvent | PreviewEvent)]
    assert kinds == ["started", "preview", "preview", "finished"]
    previews = [i for i in items if isinstance(i, PreviewEvent)]
    assert [p.index for p in previews] == [0, 1]
    assert {(p.node, p.attempt) for p in previews} == {("picture", 1)}
    for number, preview in enumerate(previews, start=1):
        assert isinstance(preview.media, Image)
        path = Path(preview.media.path)
        assert path.name == f"picture-preview-{number}.png" and path.is_file()
        assert len(repr(preview)) < 400  # a reference, never the bytes
    result = items[-1]
    assert isinstance(result, FlowResult)
    final = result.outputs["image"]
    assert Path(final.path).name == "picture.png" and Path(final.path).is_file()
    assert Path(final.path).read_bytes() != Path(previews[-1].media.path).read_bytes()
    (body,) = rec.bodies("/images/generations")
    assert body["stream"] is True and body["partial_images"] == 2
    # the usage the completed event reports is recorded: the call is priced from it
    (execution,) = result.trace.executions
    (call,) = execution.provider_calls
    assert call.usage.get("output_tokens") and call.usage.get("images") == 1
    # no base64 in the trace
    trace = (tmp_path / "out" / "trace.json").read_text(encoding="utf-8")
    assert "b64_json" not in trace and len(trace) < 20_000


async def test_nobody_listening_sends_the_unstreamed_request(
    tmp_path: Path, clock: Clock, sim: Simulator
) -> None:
    rec = Recorder(sim)
    ctx = RunContext.create(
        tmp_path, keys=sim.keys(), transport=httpx.MockTransport(rec), sleep=clock
    )
    try:
        result = await picture().ainvoke(
            {"text": PROMPT}, out_dir=tmp_path, ctx=ctx, checkpointer=False
        )
    finally:
        await ctx.aclose()
    (body,) = rec.bodies("/images/generations")
    assert "stream" not in body and "partial_images" not in body
    assert Path(result.outputs["image"].path).is_file()
    assert not list(tmp_path.glob("*preview*"))


async def test_models_that_do_not_stream_ignore_previews(
    tmp_path: Path, clock: Clock, sim: Simulator
) -> None:
    items = await run(picture("stability-core"), sim, clock, tmp_path)
    assert not [i for i in items if isinstance(i, PreviewEvent)]
    result = items[-1]
    assert isinstance(result, FlowResult) and Path(result.outputs["image"].path).is_file()


async def test_the_first_preview_waits_the_time_to_first_token(
    tmp_path: Path, clock: Clock
) -> None:
    sim = Simulator(sleep=clock, latency={"openai:ttft": 1.5, "token": 0.25})
    seen: list[float] = []
    ctx = RunContext.create(tmp_path, keys=sim.keys(), transport=sim.transport(), sleep=clock)
    config = ctx.catalog.get("openai-gpt-image-2")
    reset = token_sink.set(lambda event: seen.append(clock.now))
    try:
        with streaming("picture", previews=3):
            engine = get_engine(Conversion.TEXT_TO_IMAGE, config.provider)
            image = await engine(ctx, PROMPT, config, output_name="picture.png")
    finally:
        token_sink.reset(reset)
        await ctx.aclose()
    assert seen == pytest.approx([1.5, 1.75, 2.0])
    assert Path(image.path).is_file()


async def test_a_broken_image_stream_voids_its_previews_and_is_retried(
    tmp_path: Path, clock: Clock
) -> None:
    sim = Simulator(sleep=clock, faults=parse_faults("stream_break@openai:first_n=1"))
    items = await run(picture(previews=3), sim, clock, tmp_path)
    events = [i for i in items if isinstance(i, PreviewEvent | TokenEvent)]
    (discard,) = [e for e in events if e.kind == "discard"]
    assert discard.node == "picture" and discard.attempt == 1 and discard.reason == "transient"
    before = events[: events.index(discard)]
    after = events[events.index(discard) + 1 :]
    assert before and all(e.attempt == 1 and e.kind == "preview" for e in before)
    assert [e.index for e in after if isinstance(e, PreviewEvent)] == [0, 1, 2]
    assert {e.attempt for e in after} == {2}
    result = items[-1]
    assert isinstance(result, FlowResult) and Path(result.outputs["image"].path).is_file()


async def test_previews_with_reference_images_stream_from_the_edits_endpoint(
    tmp_path: Path, clock: Clock, sim: Simulator
) -> None:
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(image_bytes("a fox", 64, 64))
    rec = Recorder(sim)
    ctx = RunContext.create(
        tmp_path / "out", keys=sim.keys(), transport=httpx.MockTransport(rec), sleep=clock
    )
    config = ctx.catalog.get("openai-gpt-image-2")
    seen: list[Any] = []
    reset = token_sink.set(seen.append)
    try:
        with streaming("picture", previews=1):
            engine = get_engine(Conversion.TEXT_TO_IMAGE, config.provider)
            image = await engine(
                ctx, PROMPT, config, output_name="pic.png", reference_images=[Image.open(sheet)]
            )
    finally:
        token_sink.reset(reset)
        await ctx.aclose()
    (request,) = [r for r in rec.requests if r.url.path.endswith("/images/edits")]
    assert b'name="stream"\r\n\r\ntrue' in request.content
    assert b'name="partial_images"\r\n\r\n1' in request.content
    assert [type(e) for e in seen] == [PreviewEvent] and Path(image.path).is_file()


# -- the fake's wire format, read with the official SDK's types, and by our reader -------------
async def _sse(sim: Simulator, path: str, **kw: Any) -> tuple[bytes, list[Any]]:
    headers = {"authorization": f"Bearer {sim.key_for('openai')}"}
    async with (
        sim.client() as client,
        client.stream("POST", f"https://api.openai.com/v1{path}", headers=headers, **kw) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        raw = await answer.aread()
    stream = httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})
    return raw, [e async for e in sse_events(stream)]


async def test_the_image_stream_parses_with_the_sdk_and_our_reader_agrees(
    tmp_path: Path, clock: Clock
) -> None:
    from openai.types import ImageGenStreamEvent
    from pydantic import TypeAdapter

    sim = Simulator(sleep=clock)
    body = {"model": "gpt-image-2", "prompt": PROMPT, "stream": True, "partial_images": 2}
    raw, events = await _sse(sim, "/images/generations", json=body)
    adapter: TypeAdapter[Any] = TypeAdapter(ImageGenStreamEvent)
    parsed = [adapter.validate_python(e.json(), strict=True) for e in events]
    assert [p.type for p in parsed] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.event for e in events] == [p.type for p in parsed]
    assert [p.partial_image_index for p in parsed[:2]] == [0, 1]
    assert parsed[-1].usage.output_tokens > 0
    # our reader, over the same bytes: the same previews and final image the SDK saw
    shown: list[PreviewEvent] = []
    reset = token_sink.set(lambda e: shown.append(e) if isinstance(e, PreviewEvent) else None)
    ctx = RunContext.create(tmp_path, keys=sim.keys(), transport=sim.transport(), sleep=clock)
    try:
        with streaming("picture", previews=2):
            previews = _Previews(ctx, "pic.png", 1)
            stream = httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})
            final = await _read(sse_events(stream), previews, "gpt-image-2")
    finally:
        token_sink.reset(reset)
        await ctx.aclose()
    assert final == base64.b64decode(parsed[-1].b64_json)
    assert [Path(p.media.path).read_bytes() for p in shown] == [
        base64.b64decode(p.b64_json) for p in parsed[:2]
    ]


async def test_the_edit_stream_parses_with_the_sdk(tmp_path: Path, clock: Clock) -> None:
    from openai.types import ImageEditStreamEvent
    from pydantic import TypeAdapter

    sim = Simulator(sleep=clock)
    files = [("image[]", ("sheet.png", image_bytes("a fox", 64, 64), "image/png"))]
    data = {"model": "gpt-image-2", "prompt": PROMPT, "stream": "true", "partial_images": "1"}
    _, events = await _sse(sim, "/images/edits", data=data, files=files)
    adapter: TypeAdapter[Any] = TypeAdapter(ImageEditStreamEvent)
    parsed = [adapter.validate_python(e.json(), strict=True) for e in events]
    assert [p.type for p in parsed] == ["image_edit.partial_image", "image_edit.completed"]
    assert parsed[-1].usage.input_tokens_details.image_tokens > 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"model": "gpt-image-2", "stream": True, "partial_images": 4}, "partial_images"),
        ({"model": "gpt-image-2", "stream": "yes"}, "stream"),
        ({"model": "dall-e-3", "stream": True}, "stream"),
    ],
)
async def test_the_fake_refuses_what_openai_refuses(
    extra: dict[str, Any], param: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calliope_graph.simulate.openai import OpenAIFake

    # DALL-E is shut down; OpenAI-compatible servers still speak its wire (as in
    # tests/test_provider_specs.py): the fake answers it here.
    monkeypatch.setattr(OpenAIFake, "retired_models", frozenset())
    async with sim.client() as client:
        answer = await client.post(
            "https://api.openai.com/v1/images/generations",
            json={"prompt": PROMPT, **extra},
            headers={"authorization": f"Bearer {sim.key_for('openai')}"},
        )
    assert answer.status_code == 400
    assert json.loads(answer.content)["error"]["param"] == param
