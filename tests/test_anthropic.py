"""The Anthropic engines against the Anthropic fake: every conversion, every fault class."""

from __future__ import annotations

import base64
import io
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import (
    FAULT_CLASSES,
    Recorder,
    assert_secrets_absent,
    failures_under_faults,
    make_ctx,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from PIL import Image as PILImage
from pydantic import BaseModel, Field

from calliope_graph.config import InferenceModel, KeysModel, ModelConfig, catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import anthropic as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.inference import text_to_text_inference
from calliope_graph.media import Image, MediaStore
from calliope_graph.simulate import Simulator
from calliope_graph.testing import describe_image, image_bytes

API = "https://api.anthropic.com/v1/messages"
HEADERS = {"anthropic-version": "2023-06-01"}


SONNET = catalog.get("anthropic-claude-sonnet")


def claude(**params: Any) -> ModelConfig:
    return ModelConfig(
        slug="test-claude",
        model_parameters=params,
        model=InferenceModel(
            slug="test-claude", provider="anthropic", provider_model_name="claude-test"
        ),
    )


def photo(path: Path, fmt: str = "PNG") -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", 320, 240, fmt))
    return Image.open(path)


class Scene(BaseModel):
    """A scene of the story."""

    title: str
    characters: list[str] = Field(min_length=1)
    mood: str


def tool_answer(value: Any) -> Callable[[httpx.Request, httpx.Response], httpx.Response]:
    """A rewrite making the first answer's tool input ``value`` (later answers untouched)."""
    done: list[bool] = []

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if done or response.status_code != 200:
            return response
        done.append(True)
        body = response.json()
        body["content"][0]["input"] = value
        return httpx.Response(200, json=body)

    return rewrite


# -- conversions ----------------------------------------------------------------------------
def test_every_anthropic_conversion_is_registered() -> None:
    for conversion in (
        Conversion.TEXT_TO_TEXT,
        Conversion.IMAGE_ANALYSIS,
        Conversion.MESSAGES_TO_OBJECT,
    ):
        assert get_engine(conversion, "anthropic") is not None
    with pytest.raises(ConfigurationError, match="anthropic"):
        get_engine(Conversion.TEXT_TO_IMAGE, "anthropic")


async def test_text_to_text_sends_the_messages_api_request(
    rctx: RunContext, rec: Recorder, sim: Simulator
) -> None:
    config = claude(max_tokens=300, temperature=0.4, system_prompt="You tell fables.")
    text = await engine.text_to_text(rctx, "A lantern in the fog", config)
    assert "lantern" in text.lower()
    request = rec.requests[0]
    assert str(request.url) == API
    assert request.headers["x-api-key"] == sim.key_for("anthropic")
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert rec.bodies()[0] == {
        "model": "claude-test",
        "max_tokens": 300,
        "temperature": 0.4,
        "system": "You tell fables.",
        "messages": [{"role": "user", "content": "A lantern in the fog"}],
    }


async def test_max_tokens_defaults_and_output_is_deterministic(
    rctx: RunContext, rec: Recorder
) -> None:
    first = await engine.text_to_text(rctx, "A fox at dawn", claude())
    second = await engine.text_to_text(rctx, "A fox at dawn", claude())
    assert first == second and first
    assert rec.bodies()[0]["max_tokens"] == engine.DEFAULT_MAX_TOKENS
    assert "system" not in rec.bodies()[0]


async def test_text_blocks_are_joined(rctx: RunContext, rec: Recorder) -> None:
    def two_blocks(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json()
        body["content"] = [{"type": "text", "text": "Once "}, {"type": "text", "text": "upon"}]
        return httpx.Response(200, json=body)

    rec.rewrite = two_blocks
    assert await engine.text_to_text(rctx, "Begin", claude()) == "Once upon"


async def test_image_analysis_sends_a_base64_block_and_parses_json(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    image = photo(tmp_path / "kite.jpg", "JPEG")
    analysis = await engine.image_analysis(rctx, image, SONNET)
    expected = describe_image(image.read_bytes())
    assert analysis.captions == [expected["caption"]]
    assert analysis.objects == expected["objects"]
    assert analysis.sources == ["anthropic"]
    block = rec.bodies()[0]["messages"][0]["content"][0]
    assert block["type"] == "image"
    assert block["source"]["media_type"] == "image/jpeg"
    assert block["source"]["data"] == image.b64()


async def test_image_analysis_converts_unsupported_formats_to_png(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    path = tmp_path / "scan.bmp"
    PILImage.new("RGB", (64, 48), (30, 60, 200)).save(path, "BMP")
    analysis = await engine.image_analysis(rctx, Image.open(path), SONNET)
    assert "blue" in analysis.tags
    assert rec.bodies()[0]["messages"][0]["content"][0]["source"]["media_type"] == "image/png"


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
async def test_image_analysis_scales_large_images_to_the_api_working_size(
    rctx: RunContext, rec: Recorder, tmp_path: Path, fmt: str, mime: str
) -> None:
    wide = photo(tmp_path / f"wide.{fmt.lower()}", fmt)
    PILImage.open(wide.path).resize((3136, 1000)).save(wide.path, fmt)
    await engine.image_analysis(rctx, Image.open(wide.path), SONNET)
    sent = rec.bodies()[0]["messages"][0]["content"][0]["source"]
    with PILImage.open(io.BytesIO(base64.b64decode(sent["data"]))) as im:
        assert im.size == (1568, 500) and im.format == fmt
    assert sent["media_type"] == mime
    assert PILImage.open(wide.path).size == (3136, 1000)  # the input file is left alone


async def test_image_analysis_keeps_heavy_images_under_five_megabytes(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    # 1500 x 1500 pixels of noise: a PNG over 6 MB, within the size limit in pixels.
    noise = random.Random(7).randbytes(1500 * 1500 * 3)
    path = tmp_path / "noise.png"
    PILImage.frombytes("RGB", (1500, 1500), noise).save(path, "PNG")
    assert path.stat().st_size > engine.MAX_IMAGE_B64
    analysis = await engine.image_analysis(rctx, Image.open(path), SONNET)
    assert analysis.description
    sent = rec.bodies()[0]["messages"][0]["content"][0]["source"]
    assert len(sent["data"]) <= engine.MAX_IMAGE_B64 and sent["media_type"] == "image/jpeg"


async def test_image_analysis_non_json_answer_is_asked_again(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    answers = iter(["I see a kite.", None])

    def first_prose(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        text = next(answers, None)
        if text is None:
            return response
        body = response.json()
        body["content"] = [{"type": "text", "text": text}]
        return httpx.Response(200, json=body)

    rec.rewrite = first_prose
    analysis = await engine.image_analysis(rctx, photo(tmp_path / "k.png"), SONNET)
    assert analysis.description and len(rec.requests) == 2


async def test_messages_to_object_forces_a_tool(rctx: RunContext, rec: Recorder) -> None:
    messages = [
        SystemMessage("You plan scenes."),
        HumanMessage("A fox and a crow."),
        AIMessage("Shall I?"),
        HumanMessage("Yes."),
    ]
    scene = await engine.messages_to_object(rctx, messages, SONNET, Scene)
    assert isinstance(scene, Scene) and scene.characters
    body = rec.bodies()[0]
    assert body["system"] == "You plan scenes."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["tools"][0]["name"] == "Scene"
    assert body["tools"][0]["input_schema"] == Scene.model_json_schema()
    assert body["tools"][0]["description"] == "A scene of the story."
    assert body["tool_choice"] == {"type": "tool", "name": "Scene"}


async def test_messages_to_object_sends_message_images(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    image = photo(tmp_path / "k.png")
    message = HumanMessage(
        content=[
            {"type": "text", "text": "Plan a scene from this."},
            {"type": "image_url", "image_url": {"url": image.data_url()}},
        ]
    )
    await engine.messages_to_object(rctx, [message], SONNET, Scene)
    block = rec.bodies()[0]["messages"][0]["content"][1]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": image.b64()},
    }


async def test_messages_to_object_reasks_once_with_the_error(
    rctx: RunContext, rec: Recorder
) -> None:
    rec.rewrite = tool_answer({"title": "x", "characters": [], "mood": "calm"})
    scene = await engine.messages_to_object(rctx, [HumanMessage("A fox.")], SONNET, Scene)
    assert scene.characters
    second = rec.bodies()[1]["messages"]
    assert second[1]["role"] == "assistant" and second[1]["content"][0]["type"] == "tool_use"
    result = second[2]["content"][0]
    assert result["type"] == "tool_result" and result["is_error"] is True
    assert result["tool_use_id"] == second[1]["content"][0]["id"]
    assert "characters" in result["content"]


async def test_messages_to_object_fails_clearly_after_two_bad_answers(
    rctx: RunContext, rec: Recorder
) -> None:
    def always_bad(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json()
        body["content"][0]["input"] = {"title": 3}
        return httpx.Response(200, json=body)

    rec.rewrite = always_bad
    with pytest.raises(InvalidRequestError, match="valid Scene in two tries") as info:
        await engine.messages_to_object(rctx, [HumanMessage("A fox.")], SONNET, Scene)
    assert info.value.code == "invalid_structured_output"
    assert len(rec.requests) == 2


async def test_refusal_is_a_content_policy_error(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="content_policy", provider="anthropic", pattern="forbidden")
    with pytest.raises(ContentPolicyError) as info:
        await engine.text_to_text(ctx, "something forbidden", SONNET)
    assert info.value.code == "refusal" and "fallback edge" in str(info.value)
    with pytest.raises(ContentPolicyError):
        await engine.messages_to_object(ctx, [HumanMessage("forbidden")], SONNET, Scene)
    assert await engine.text_to_text(ctx, "something fine", SONNET)
    assert sim.count("anthropic") == 3


async def test_empty_fault_gives_empty_text(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="empty", provider="anthropic")
    assert await engine.text_to_text(ctx, "hi", SONNET) == ""


# -- faults ---------------------------------------------------------------------------------
async def test_rate_limit_honours_retry_after(ctx: RunContext, sim: Simulator, clock: Any) -> None:
    sim.add_fault(kind="rate_limit", provider="anthropic", first_n=2, retry_after=7)
    assert await engine.text_to_text(ctx, "hi", SONNET)
    assert clock.waits == [7.0, 7.0]
    assert sim.count("anthropic") == 3


async def test_rate_limit_beyond_the_cap_fails(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="anthropic", retry_after=600)
    with pytest.raises(RateLimitError) as info:
        await engine.text_to_text(ctx, "hi", SONNET)
    assert info.value.retry_after == 600 and info.value.code == "rate_limit_error"
    assert sim.count("anthropic") == 1


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("overloaded", 529, "overloaded_error"),
        ("unavailable", 529, "overloaded_error"),
        ("server_error", 500, "api_error"),
    ],
)
async def test_server_errors_are_retried(
    ctx: RunContext, sim: Simulator, kind: str, status: int, code: str
) -> None:
    sim.add_fault(kind=kind, provider="anthropic", first_n=2)
    assert await engine.text_to_text(ctx, "hi", SONNET)
    assert sim.count("anthropic") == 3
    sim.clear_faults()
    sim.add_fault(kind=kind, provider="anthropic")
    with pytest.raises(TransientProviderError) as info:
        await engine.text_to_text(ctx, "hi", SONNET)
    assert info.value.status == status and info.value.code == code
    assert sim.count("anthropic") == 3 + ctx.retry.max_attempts


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="hang", provider="anthropic")
    with pytest.raises(ProviderTimeoutError):
        await engine.text_to_text(ctx, "hi", SONNET)
    assert sim.count("anthropic") == ctx.retry.max_attempts


async def test_malformed_body_is_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="malformed", provider="anthropic", first_n=1)
    assert await engine.text_to_text(ctx, "hi", SONNET)
    assert sim.count("anthropic") == 2


async def test_bad_requests_are_not_retried(rctx: RunContext, rec: Recorder) -> None:
    with pytest.raises(InvalidRequestError, match="temperature") as info:
        await engine.text_to_text(rctx, "hi", claude(temperature=1.5))
    assert info.value.status == 400 and info.value.code == "invalid_request_error"
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (403, "permission_error", AuthenticationError),
        (404, "not_found_error", InvalidRequestError),
        (413, "request_too_large", InvalidRequestError),
    ],
)
async def test_other_error_types_map_without_retry(
    rctx: RunContext, rec: Recorder, status: int, kind: str, cls: type[Exception]
) -> None:
    def fail(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = {"type": "error", "error": {"type": kind, "message": f"{kind} (staged)"}}
        return httpx.Response(status, json=body)

    rec.rewrite = fail
    with pytest.raises(cls, match=r"\(staged\)") as info:
        await engine.text_to_text(rctx, "hi", SONNET)
    assert getattr(info.value, "code", None) == kind
    assert len(rec.requests) == 1


async def test_wrong_key_is_an_authentication_error_without_the_key(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-ant-api03-SECRETwrongkey0123456789"
    ctx = make_ctx(sim.transport(), sim.keys(anthropic_api_key=wrong), clock, tmp_path)
    try:
        with pytest.raises(AuthenticationError) as info:
            await engine.text_to_text(ctx, "hi", SONNET)
        sim.add_fault(kind="hang", provider="anthropic")
        with pytest.raises(AuthenticationError):
            await engine.image_analysis(ctx, photo(tmp_path / "k.png"), SONNET)
    finally:
        await ctx.aclose()
    assert info.value.status == 401 and info.value.code == "authentication_error"
    assert "check the key" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert wrong not in caplog.text
    assert sim.count("anthropic") == 2


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-ant-api03-SECRETwrongkey9876543210"
    right = sim.key_for("anthropic")
    bad = make_ctx(sim.transport(), sim.keys(anthropic_api_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    image = photo(tmp_path / "k.png")
    calls: list[Callable[[RunContext], Any]] = [
        lambda ctx: engine.text_to_text(ctx, "hi", SONNET),
        lambda ctx: engine.image_analysis(ctx, image, SONNET),
        lambda ctx: engine.messages_to_object(ctx, [HumanMessage("a fox")], SONNET, Scene),
    ]
    failures: list[Exception] = []
    try:
        for call in calls:
            failures += await failures_under_faults(
                sim, "anthropic", bad, good, call, faults=(*FAULT_CLASSES, "overloaded")
            )
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert sum(isinstance(f, ContentPolicyError) for f in failures) == len(calls)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


async def test_missing_key_is_a_configuration_error(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
            await engine.text_to_text(ctx, "hi", SONNET)
    assert sim.count() == 0


async def test_base_url_override_reaches_another_host() -> None:
    seen: list[httpx.Request] = []

    def proxy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        message = {
            "id": "msg_proxy",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "Hello from the proxy."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
        return httpx.Response(200, json=message)

    keys = KeysModel.from_env(
        {"ANTHROPIC_API_KEY": "proxy-key-123", "ANTHROPIC_BASE_URL": "http://claude.internal:8080/"}
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(proxy)) as client:
        text = await text_to_text_inference(client, "hi", SONNET, keys)
    assert text == "Hello from the proxy."
    assert str(seen[0].url) == "http://claude.internal:8080/v1/messages"
    assert seen[0].headers["x-api-key"] == "proxy-key-123"


# -- the fake itself ------------------------------------------------------------------------
async def test_fake_checks_headers_and_bodies_like_anthropic(sim: Simulator) -> None:
    key = {"x-api-key": sim.key_for("anthropic")}
    good = {
        "model": "claude-test",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with sim.client() as client:
        wrong = await client.post(API, headers={**HEADERS, "x-api-key": "nope"}, json=good)
        no_version = await client.post(API, headers=key, json=good)
        no_max = await client.post(
            API,
            headers={**key, **HEADERS},
            json={k: v for k, v in good.items() if k != "max_tokens"},
        )
        bad_role = await client.post(
            API,
            headers={**key, **HEADERS},
            json={**good, "messages": [{"role": "system", "content": "hi"}]},
        )
        extra = await client.post(API, headers={**key, **HEADERS}, json={**good, "n": 2})
        ok = await client.post(API, headers={**key, **HEADERS}, json=good)
    assert wrong.status_code == 401
    assert wrong.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": wrong.headers["request-id"],
    }
    assert no_version.status_code == 400 and "anthropic-version" in no_version.text
    assert no_max.status_code == 400 and "max_tokens: Field required" in no_max.text
    assert bad_role.status_code == 400 and "top-level system" in bad_role.text
    assert extra.status_code == 400 and "Extra inputs are not permitted" in extra.text
    assert ok.status_code == 200
    message = ok.json()
    assert set(message) == {
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "stop_details",
        "container",
        "usage",
    }
    assert message["id"].startswith("msg_") and message["type"] == "message"
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0
    assert ok.headers["request-id"].startswith("req_")


async def test_fake_cuts_at_max_tokens_and_rate_limits_with_retry_after(sim: Simulator) -> None:
    headers = {**HEADERS, "x-api-key": sim.key_for("anthropic")}
    body = {"model": "claude-test", "max_tokens": 3, "messages": [{"role": "user", "content": "a"}]}
    sim.add_fault(kind="rate_limit", provider="anthropic", first_n=1, retry_after=12)
    async with sim.client() as client:
        limited = await client.post(API, headers=headers, json=body)
        cut = await client.post(API, headers=headers, json=body)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "12"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert cut.json()["stop_reason"] == "max_tokens"
    assert len(cut.json()["content"][0]["text"].split(" ")) == 3
