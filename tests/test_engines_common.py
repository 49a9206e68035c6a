"""What every engine shares: the transport-error mapping, the retry loop, the poll loop
(and its one meaning of "cancelled"), the parameter picker and ``extra_body``."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, make_ctx

import calliope_graph._transport as transport_module
from calliope_graph._transport import map_transport_errors, transport_error
from calliope_graph.config import catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import (
    anthropic,
    azure_vision,
    hugging_face,
    openai,
    openai_media,
    replicate,
    runway,
    stability,
)
from calliope_graph.engines._http import CallStats, call_stats, request, with_retries
from calliope_graph.engines._params import form_fields, pick, with_extra_body
from calliope_graph.errors import (
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    TransientProviderError,
)
from calliope_graph.media import Audio, Image
from calliope_graph.simulate import Simulator
from calliope_graph.simulate._openai_wire import multipart_form
from calliope_graph.testing import image_bytes, wav_bytes


def photo(path: Path) -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", 320, 240, "PNG"))
    return Image.open(path)


@pytest.fixture
def kite(tmp_path: Path) -> Image:
    return photo(tmp_path / "kite.png")


def sent_json(rec: Recorder, host_path: str) -> dict[str, Any]:
    (request,) = [r for r in rec.requests if r.url.path.endswith(host_path)]
    body: dict[str, Any] = json.loads(request.content)
    return body


def sent_form(rec: Recorder, host_path: str) -> dict[str, str]:
    (request,) = [r for r in rec.requests if r.url.path.endswith(host_path)]
    fields, _files = multipart_form(request)
    return {k: str(v) for k, v in fields.items()}


# -- the transport-error mapping -------------------------------------------------------------
_REQUEST = httpx.Request("GET", "https://api.example.com/v1/things?sig=secret-token")


def _with_request(exc: httpx.RequestError) -> httpx.RequestError:
    exc.request = _REQUEST
    return exc


@pytest.mark.parametrize(
    ("exc", "cls", "code"),
    [
        (httpx.ReadTimeout("slow"), ProviderTimeoutError, "timeout"),
        (httpx.ConnectTimeout("slow"), ProviderTimeoutError, "timeout"),
        (httpx.PoolTimeout("busy"), ProviderTimeoutError, "timeout"),
        (httpx.ConnectError("refused"), TransientProviderError, "connect_error"),
        (httpx.RemoteProtocolError("peer closed"), TransientProviderError, "protocol_error"),
        (httpx.ReadError("reset"), TransientProviderError, "transport_error"),
        (httpx.ProxyError("proxy said no"), TransientProviderError, "proxy_error"),
        (httpx.LocalProtocolError("bad header"), InvalidRequestError, "local_protocol_error"),
        (httpx.DecodingError("bad gzip"), TransientProviderError, "malformed_body"),
    ],
)
def test_lower_layer_errors_map_to_the_most_specific_class(
    exc: httpx.RequestError, cls: type[ProviderError], code: str
) -> None:
    error = transport_error(_with_request(exc), "replicate", what="download")
    assert type(error) is cls and isinstance(error, ProviderError)
    assert error.provider == "replicate" and error.code == code
    assert "download" in str(error) and "/v1/things" in str(error)
    assert "secret-token" not in str(error)  # the query string may carry a signed token


def test_a_url_without_http_is_a_configuration_error() -> None:
    error = transport_error(httpx.UnsupportedProtocol("ftp is not supported"), "openai")
    assert isinstance(error, ConfigurationError) and "base URL" in str(error)


def test_malformed_json_is_transient_and_other_errors_are_not_mapped() -> None:
    try:
        json.loads("{not json")
    except json.JSONDecodeError as exc:
        error = transport_error(exc, "runway")
    assert isinstance(error, TransientProviderError) and error.code == "malformed_body"
    assert transport_error(ValueError("mine"), "runway") is None
    assert transport_error(KeyError("x"), "runway") is None


def test_secrets_and_keylike_strings_are_masked() -> None:
    exc = httpx.ConnectError("refused for key sk-abcdefghijkl and token hunter22")
    error = transport_error(exc, "openai", secrets=["hunter22"])
    assert error is not None
    assert "sk-abcdefghijkl" not in str(error) and "hunter22" not in str(error)
    assert "***" in str(error)


def test_the_context_manager_maps_in_with_and_async_with() -> None:
    with pytest.raises(TransientProviderError) as info, map_transport_errors("stability"):
        raise httpx.ConnectError("refused")
    assert info.value.code == "connect_error" and info.value.__cause__ is None
    with pytest.raises(KeyError), map_transport_errors("stability"):
        raise KeyError("not ours: passes through")
    already = ProviderError("ours", provider="stability")
    with pytest.raises(ProviderError) as kept, map_transport_errors("stability"):
        raise already
    assert kept.value is already


async def test_the_context_manager_works_with_async_with() -> None:
    with pytest.raises(ProviderTimeoutError):
        async with map_transport_errors("runway", what="download"):
            raise httpx.ReadTimeout("slow")


def test_the_mapping_module_imports_nothing_above_the_errors() -> None:
    """media.py uses it, so it must not import the engines (nor anything that does)."""

    def ours(path: str | None) -> set[str]:
        assert path is not None
        tree = ast.parse(Path(path).read_text())
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        return {name for name in imported if name.startswith("calliope_graph")}

    from calliope_graph import _secrets

    assert ours(transport_module.__file__) == {"calliope_graph.errors", "calliope_graph._secrets"}
    assert ours(_secrets.__file__) == set()  # the redaction it shares imports nothing of ours


async def test_request_maps_and_retries_a_dropped_connection(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    calls: list[httpx.Request] = []

    def drop(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    ctx = make_ctx(httpx.MockTransport(drop), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(TransientProviderError, match="connection failed") as info:
            await request(ctx, "openai", "GET", "https://api.openai.com/v1/models", parse=str)
    finally:
        await ctx.aclose()
    assert info.value.code == "protocol_error"
    assert len(calls) == ctx.retry.max_attempts


async def test_request_does_not_retry_a_bad_base_url(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(httpx.AsyncHTTPTransport(), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="base URL"):
            await request(ctx, "openai", "GET", "ftp://api.openai.com/v1/models", parse=str)
    finally:
        await ctx.aclose()
    assert clock.waits == []


# -- the one retry loop ----------------------------------------------------------------------
async def test_with_retries_records_attempts_and_calls_on_retry(ctx: RunContext) -> None:
    seen: list[tuple[str, str]] = []
    stats = CallStats(on_retry=lambda provider, exc: seen.append((provider, type(exc).__name__)))
    answers: list[Exception | str] = [
        TransientProviderError("503", provider="x"),
        TransientProviderError("503", provider="x"),
        "done",
    ]

    async def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    token = call_stats.set(stats)
    try:
        assert await with_retries(ctx, "x", attempt) == "done"
    finally:
        call_stats.reset(token)
    assert stats.attempts == 3 and stats.retries == 2 and stats.calls == {"x": 3}
    assert len(stats.attempt_times) == 3
    assert seen == [("x", "TransientProviderError")] * 2


async def test_with_retries_does_not_retry_a_plain_provider_error(ctx: RunContext) -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise ProviderError("cancelled", provider="x", code="cancelled")

    with pytest.raises(ProviderError):
        await with_retries(ctx, "x", attempt)
    assert calls == 1


def test_the_langchain_engine_imports_no_private_helper_of_http() -> None:
    from calliope_graph.engines import langchain

    tree = ast.parse(Path(langchain.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "calliope_graph.engines._http":
            assert not [a.name for a in node.names if a.name.startswith("_")]
            assert "with_retries" in {a.name for a in node.names}


# -- the parameter picker --------------------------------------------------------------------
def test_pick_keeps_named_set_parameters_and_renames() -> None:
    params = {"temperature": 0.2, "seed": None, "system_prompt": "x", "extra_body": {"a": 1}}
    assert pick(params, {"temperature", "seed"}) == {"temperature": 0.2}
    assert pick(params, None, exclude={"system_prompt"}) == {"temperature": 0.2}
    renamed = pick(
        {"max_output_tokens": 9}, {"max_tokens"}, renames={"max_output_tokens": "max_tokens"}
    )
    assert renamed == {"max_tokens": 9}
    both = {"max_tokens": 5, "max_output_tokens": 9}
    assert pick(both, {"max_tokens"}, renames={"max_output_tokens": "max_tokens"}) == {
        "max_tokens": 5
    }


def test_extra_body_merges_last_and_key_by_key() -> None:
    body = {"model": "m", "parameters": {"seed": 1, "steps": 4}}
    params = {"extra_body": {"parameters": {"steps": 8}, "options": {"x": True}}}
    merged = with_extra_body(body, params)
    assert merged == {"model": "m", "parameters": {"seed": 1, "steps": 8}, "options": {"x": True}}
    assert body == {"model": "m", "parameters": {"seed": 1, "steps": 4}}  # not changed
    assert with_extra_body(body, {}) is body


def test_extra_body_that_is_not_a_mapping_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="extra_body of my-config"):
        with_extra_body({}, {"extra_body": "top_k=20"}, "my-config")


def test_form_fields_write_values_as_text() -> None:
    assert form_fields({"a": True, "b": 2, "c": [1], "d": None, "e": "x"}) == {
        "a": "true",
        "b": "2",
        "c": "[1]",
        "e": "x",
    }


# -- extra_body, per provider ----------------------------------------------------------------


async def test_extra_body_reaches_openai_chat_images_and_transcriptions(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    chat = catalog.get("openai-gpt-4o").with_parameters(
        extra_body={"store": False, "temperature": 0.1}
    )
    await openai.text_to_text(rctx, "hi", chat)
    body = sent_json(rec, "/chat/completions")
    assert body["store"] is False and body["temperature"] == 0.1  # it wins over the config's
    images = catalog.get("openai-gpt-image-2").with_parameters(extra_body={"user": "story-7"})
    await openai_media.text_to_image(rctx, "a kite", images, output_name="kite.png")
    assert sent_json(rec, "/images/generations")["user"] == "story-7"
    (tmp_path / "a.wav").write_bytes(wav_bytes("a short tune", seconds=0.5))
    whisper = catalog.get("openai-whisper-1").with_parameters(
        extra_body={"timestamp_granularities": "segment"}
    )
    await openai_media.audio_to_text(rctx, Audio.open(tmp_path / "a.wav"), whisper)
    assert sent_form(rec, "/audio/transcriptions")["timestamp_granularities"] == "segment"


async def test_extra_body_reaches_anthropic(rctx: RunContext, rec: Recorder) -> None:
    config = catalog.get("anthropic-claude-sonnet").with_parameters(
        extra_body={"metadata": {"user_id": "u-1"}}
    )
    await anthropic.text_to_text(rctx, "hi", config)
    assert sent_json(rec, "/v1/messages")["metadata"] == {"user_id": "u-1"}


async def test_extra_body_reaches_stability_forms_and_json(rctx: RunContext, rec: Recorder) -> None:
    core = catalog.get("stability-core").with_parameters(extra_body={"style_preset": "anime"})
    await stability.text_to_image(rctx, "a kite", core, output_name="a.png")
    assert sent_form(rec, "/generate/core")["style_preset"] == "anime"
    sdxl = catalog.get("stability-sdxl").with_parameters(extra_body={"cfg_scale": 9})
    await stability.text_to_image(rctx, "a kite", sdxl, output_name="b.png")
    assert sent_json(rec, "/text-to-image")["cfg_scale"] == 9


async def test_extra_body_reaches_replicate_inputs(rctx: RunContext, rec: Recorder) -> None:
    config = catalog.get("replicate-llama-3").with_parameters(extra_body={"top_k": 20})
    await replicate.text_to_text(rctx, "hi", config)
    (created,) = [r for r in rec.requests if r.method == "POST"]
    inputs = json.loads(created.content)["input"]
    assert inputs["top_k"] == 20 and "extra_body" not in inputs  # it used to be sent as is


async def test_extra_body_reaches_hugging_face_json_and_raw_requests(
    rctx: RunContext, rec: Recorder, kite: Image
) -> None:
    text = catalog.get("huggingface-mistral-7b").with_parameters(
        extra_body={"parameters": {"top_k": 20}, "options": {"use_cache": False}}
    )
    await hugging_face.text_to_text(rctx, "Once upon a time", text)
    body = json.loads(rec.requests[-1].content)
    assert body["parameters"]["top_k"] == 20 and body["parameters"]["return_full_text"] is False
    assert body["options"] == {"use_cache": False}
    blip = catalog.get("huggingface-blip").with_parameters(
        extra_body={"parameters": {"max_new_tokens": 20}}
    )
    analysis = await hugging_face.image_analysis(rctx, kite, blip)
    sent = rec.requests[-1]
    assert sent.headers["content-type"] == "application/json"  # raw bytes went as base64 JSON
    assert json.loads(sent.content)["parameters"] == {"max_new_tokens": 20}
    assert analysis.description


async def test_extra_body_reaches_runway(rctx: RunContext, rec: Recorder, kite: Image) -> None:
    config = catalog.get("runway-gen4-turbo").with_parameters(extra_body={"seed": 7})
    await runway.image_and_text_to_video(rctx, kite, "it flies", config, output_name="v.mp4")
    assert sent_json(rec, "/v1/image_to_video")["seed"] == 7


async def test_extra_body_reaches_azure_as_query_parameters(
    rctx: RunContext, rec: Recorder, kite: Image
) -> None:
    config = catalog.get("azure-vision-4.0").with_parameters(
        extra_body={"smartcrops-aspect-ratios": "0.9,1.33"}
    )
    await azure_vision.image_analysis(rctx, kite, config)
    (sent,) = rec.requests
    assert sent.url.params["smartcrops-aspect-ratios"] == "0.9,1.33"
    assert sent.content == kite.read_bytes()  # the body stays the image


# -- polling: one meaning of "cancelled", one timeout ----------------------------------------
async def _cancelled_replicate(sim: Simulator, clock: Any, tmp_path: Path) -> ProviderError:
    async def cancel_on_first_poll(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/predictions/"):
            async with sim.client() as client:
                await client.post(
                    f"{request.url}/cancel",
                    headers={"Authorization": request.headers["authorization"]},
                )
        return await sim.handle(request)

    ctx = make_ctx(httpx.MockTransport(cancel_on_first_poll), sim.keys(), clock, tmp_path)
    config = catalog.get("replicate-llama-3").with_parameters(wait=0)
    try:
        with pytest.raises(ProviderError) as info:
            await replicate.text_to_text(ctx, "x", config)
    finally:
        await ctx.aclose()
    return info.value


async def _cancelled_runway(sim: Simulator, clock: Any, tmp_path: Path) -> ProviderError:
    async def cancel_on_first_poll(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/tasks/"):
            async with sim.client() as client:
                await client.delete(
                    str(request.url),
                    headers={
                        "Authorization": request.headers["authorization"],
                        "X-Runway-Version": runway.API_VERSION,
                    },
                )
        return await sim.handle(request)

    ctx = make_ctx(httpx.MockTransport(cancel_on_first_poll), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(ProviderError) as info:
            await runway.image_and_text_to_video(
                ctx,
                photo(tmp_path / "k.png"),
                "x",
                catalog.get("runway-gen4-turbo"),
                output_name="v.mp4",
            )
    finally:
        await ctx.aclose()
    return info.value


async def test_a_cancelled_prediction_and_a_cancelled_task_raise_the_same_error(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "w").mkdir()
    errors = [
        await _cancelled_replicate(sim, clock, tmp_path / "r"),
        await _cancelled_runway(sim, clock, tmp_path / "w"),
    ]
    for error in errors:
        assert type(error) is ProviderError and error.code == "cancelled"
        assert error.error_class == "provider" and "was cancelled" in str(error)
        assert not isinstance(error, TransientProviderError)  # someone chose to stop it
    assert (
        sim.calls[("replicate", "predictions.create")]
        + sim.calls[("replicate", "models.predictions.create")]
        == 1
    )  # not retried
    assert sim.calls[("runway", "image_to_video")] == 1


async def test_every_job_past_the_bound_is_a_timeout_naming_it(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.poll_steps = 10**6
    mistral = catalog.get("huggingface-mistral-7b")
    sim.state("hugging_face")["cold"] = {mistral.model.provider_model_name: 10**6}
    calls = [
        replicate.text_to_text(ctx, "x", catalog.get("replicate-llama-3").with_parameters(wait=0)),
        runway.image_and_text_to_video(
            ctx, kite, "x", catalog.get("runway-gen4-turbo"), output_name="v.mp4"
        ),
        hugging_face.text_to_text(ctx, "x", mistral),
    ]
    for call in calls:
        with pytest.raises(ProviderTimeoutError) as info:
            await call
        assert info.value.job_id and info.value.job_id in str(info.value)
        assert "polling" in str(info.value)


async def test_poll_parameters_must_be_positive_numbers(ctx: RunContext, kite: Image) -> None:
    config = catalog.get("runway-gen4-turbo").with_parameters(poll_timeout="soon")
    with pytest.raises(ConfigurationError, match="poll_timeout"):
        await runway.image_and_text_to_video(ctx, kite, "x", config, output_name="v.mp4")


async def test_a_cookie_a_provider_sets_is_never_sent_back(tmp_path: Path) -> None:
    sent: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, json={}, headers={"set-cookie": "affinity=node-7; Path=/"})

    ctx = RunContext.create(tmp_path, transport=httpx.MockTransport(answer))
    try:
        for _ in range(2):
            await ctx.client.get("https://api.example.test/v1/thing")
        ctx.client.cookies = {"session": "x"}  # setting them is ignored too
        await ctx.client.get("https://api.example.test/v1/thing")
    finally:
        await ctx.aclose()
    assert sent == [None, None, None]
    assert not ctx.client.cookies
