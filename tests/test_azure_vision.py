"""The Azure Vision engine (v3.2 and 4.0) against the Azure fake: analysis, OCR, every fault."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import Recorder, assert_secrets_absent, failures_under_faults, make_ctx
from PIL import Image as PILImage

from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    KeysModel,
    ModelConfig,
    catalog,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import azure_vision as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    MediaError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Image, MediaStore
from calliope_graph.nodes import AnalyzeImage
from calliope_graph.simulate import Simulator
from calliope_graph.testing import describe_image, image_bytes

ENDPOINT = "https://calliope-sim.cognitiveservices.azure.com"
V4_PATH = "/computervision/imageanalysis:analyze"
V3_ANALYZE = "/vision/v3.2/analyze"
V3_OCR = "/vision/v3.2/ocr"
V4 = catalog.get("azure-vision-4.0")
V3 = catalog.get("azure-vision-3.2")


def photo(path: Path, fmt: str = "PNG", size: tuple[int, int] = (320, 240)) -> Image:
    path.write_bytes(image_bytes("a red kite over a harbour", *size, fmt))
    return Image.open(path)


@pytest.fixture
def kite(tmp_path: Path) -> Image:
    return photo(tmp_path / "kite.png")


def azure_config(**params: Any) -> ModelConfig:
    return ModelConfig(
        slug="test-azure",
        model_parameters=params,
        model=InferenceModel(
            slug="azure_vision", provider=InferenceModelProvider.AZURE, provider_model_name="vision"
        ),
    )


def azure_error(status: int, code: str, message: str, inner: str | None = None) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner, "message": message}
    return httpx.Response(status, json={"error": error})


# -- registration and configuration ---------------------------------------------------------
def test_azure_serves_image_analysis() -> None:
    assert get_engine(Conversion.IMAGE_ANALYSIS, "azure_vision") is engine.image_analysis


@pytest.mark.parametrize(
    ("params", "model_name", "expected"),
    [
        ({"api_version": "4.0"}, "x", "4.0"),
        ({"api_version": "v3.2"}, "x", "3.2"),
        ({"api_version": 3.2}, "x", "3.2"),
        ({"api_version": 4}, "x", "4.0"),
        ({}, "computer-vision-3.2", "3.2"),
        ({}, "image-analysis-4.0", "4.0"),
    ],
)
def test_the_config_chooses_the_api(params: dict[str, Any], model_name: str, expected: str) -> None:
    config = azure_config(**params)
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"provider_model_name": model_name})}
    )
    assert engine.api_version(config) == expected


async def test_bad_api_version_or_feature_is_a_configuration_error(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    with pytest.raises(ConfigurationError, match=r'"3\.2".*"4\.0"'):
        await engine.image_analysis(ctx, kite, azure_config(api_version="5"))
    with pytest.raises(ConfigurationError, match="denseCaptions"):
        await engine.image_analysis(ctx, kite, V4.with_parameters(features=["captions"]))
    assert sim.count("azure_vision") == 0


def test_catalog_has_both_apis() -> None:
    assert engine.api_version(V4) == "4.0" and engine.api_version(V3) == "3.2"
    assert V4.provider is V3.provider is InferenceModelProvider.AZURE


# -- 4.0 --------------------------------------------------------------------------------------
async def test_v4_analysis_sends_the_raw_image_and_reads_every_result(
    rctx: RunContext, rec: Recorder, sim: Simulator, kite: Image
) -> None:
    analysis = await engine.image_analysis(rctx, kite, V4)
    seen = describe_image(kite.read_bytes())
    caption = seen["caption"][0].upper() + seen["caption"][1:]
    assert analysis.captions[0] == caption
    assert len(analysis.captions) == 1 + len(seen["objects"])  # dense captions follow
    assert analysis.tags == seen["tags"]
    assert analysis.objects == seen["objects"]
    assert analysis.text == seen["text"]
    assert analysis.description.startswith(caption + ".")
    assert seen["text"] in analysis.description
    assert analysis.sources == ["azure_vision"]
    assert set(seen["objects"]) <= set(analysis.all_tags_and_objects.split(", "))

    (request,) = rec.requests
    assert str(request.url).startswith(f"{ENDPOINT}{V4_PATH}?")
    assert dict(request.url.params) == {
        "api-version": "2023-10-01",
        "features": "caption,denseCaptions,tags,objects,read",
        "language": "en",
    }
    assert request.headers["ocp-apim-subscription-key"] == sim.key_for("azure_vision")
    assert request.headers["content-type"] == "application/octet-stream"
    assert "authorization" not in request.headers
    assert request.content == kite.read_bytes()
    assert sim.calls[("azure_vision", "analyze.4.0")] == 1


async def test_v4_parameters_reach_the_query(rctx: RunContext, rec: Recorder, kite: Image) -> None:
    config = V4.with_parameters(
        features="Tags,OBJECTS",
        language="es",
        gender_neutral_caption=True,
        model_version="latest",
        rest_api_version="2024-02-01",
    )
    analysis = await engine.image_analysis(rctx, kite, config)
    assert analysis.captions == [] and analysis.text == "" and analysis.tags
    assert dict(rec.requests[0].url.params) == {
        "api-version": "2024-02-01",
        "features": "tags,objects",
        "language": "es",
        "gender-neutral-caption": "true",
        "model-version": "latest",
    }


async def test_analysis_is_deterministic_and_follows_the_image(
    ctx: RunContext, tmp_path: Path
) -> None:
    first = photo(tmp_path / "a.png")
    again = await engine.image_analysis(ctx, first, V4)
    assert again == await engine.image_analysis(ctx, first, V4)
    other = tmp_path / "b.png"
    # A picture that looks different (a night scene): the analysis reports only colours and
    # light, so two similar daytime drawings would rightly be described alike.
    other.write_bytes(image_bytes("a castle under the moon at night", 320, 240))
    assert (await engine.image_analysis(ctx, Image.open(other), V4)) != again


# -- v3.2 -------------------------------------------------------------------------------------
async def test_v3_analysis_then_ocr(
    rctx: RunContext, rec: Recorder, sim: Simulator, kite: Image
) -> None:
    analysis = await engine.image_analysis(rctx, kite, V3)
    seen = describe_image(kite.read_bytes())
    assert analysis.captions == [seen["caption"][0].upper() + seen["caption"][1:]]
    assert analysis.tags == seen["tags"] and analysis.objects == seen["objects"]
    assert analysis.text == seen["text"]
    assert analysis.description.startswith(analysis.captions[0])

    analyze, ocr = rec.requests
    assert analyze.url.path == V3_ANALYZE and ocr.url.path == V3_OCR
    assert dict(analyze.url.params) == {
        "visualFeatures": "Description,Tags,Objects",
        "language": "en",
    }
    assert dict(ocr.url.params) == {"language": "unk", "detectOrientation": "true"}
    for request in (analyze, ocr):
        assert request.headers["ocp-apim-subscription-key"] == sim.key_for("azure_vision")
        assert request.headers["content-type"] == "application/octet-stream"
        assert request.content == kite.read_bytes()
    assert (
        sim.calls[("azure_vision", "analyze.v3.2")] == 1
        and sim.calls[("azure_vision", "ocr.v3.2")] == 1
    )


async def test_v3_without_ocr_is_one_call(ctx: RunContext, sim: Simulator, kite: Image) -> None:
    analysis = await engine.image_analysis(ctx, kite, V3.with_parameters(ocr=False))
    assert analysis.text == "" and analysis.captions
    assert sim.count("azure_vision") == 1


@pytest.mark.parametrize("config", [V3, V4], ids=["v3.2", "4.0"])
async def test_ocr_reads_the_text(
    rctx: RunContext, rec: Recorder, kite: Image, config: ModelConfig
) -> None:
    text = await engine.ocr(rctx, kite, config)
    assert text == describe_image(kite.read_bytes())["text"]
    (request,) = rec.requests
    if config is V4:
        assert request.url.params["features"] == "read"
    else:
        assert request.url.path == V3_OCR


# -- reading answers like Calliope ----------------------------------------------------------
async def test_the_seeds_filters_and_the_preview_shape(
    rctx: RunContext, rec: Recorder, kite: Image
) -> None:
    body = {
        "modelVersion": "2023-10-01",
        "captionResult": {"text": "a man taking a selfie", "confidence": 0.8},
        "denseCaptionsResult": {
            "values": [
                {"text": "a man taking a selfie", "confidence": 0.8},
                {"text": "a red kite", "confidence": 0.2},
            ]
        },
        "tagsResult": {
            "values": [
                {"name": "selfie", "confidence": 0.99},
                {"name": "Human face", "confidence": 0.9},
                {"name": "kite", "confidence": 0.9},
                {"name": "sky", "confidence": 0.3},
            ]
        },
        "objectsResult": {
            "values": [{"tags": [{"name": "kite", "confidence": 0.7}]}, {"name": "sail"}]
        },
        "readResult": {"content": "HELLO\n"},
    }  # fmt: skip
    rec.answer = lambda request: httpx.Response(200, json=body)
    analysis = await engine.image_analysis(rctx, kite, V4)
    assert analysis.captions == ["A man looking at me", "A red kite"]
    assert analysis.tags == ["kite", "sky"] and analysis.objects == ["kite", "sail"]
    assert analysis.text == "HELLO"

    strict = V4.with_parameters(min_confidence=0.5, ignore_tags=[], caption_replacements={})
    analysis = await engine.image_analysis(rctx, kite, strict)
    assert analysis.captions == ["A man taking a selfie"]
    assert analysis.tags == ["selfie", "Human face", "kite"]


def test_v3_and_ocr_answers_are_read() -> None:
    analysis = engine.interpret_v3(
        {
            "description": {"tags": ["outdoor", "kite"], "captions": [{"text": "a kite"}]},
            "tags": [{"name": "sky", "confidence": 0.9}, {"name": "skin", "confidence": 0.9}],
            "objects": [{"object": "kite", "rectangle": {"x": 0, "y": 0, "w": 9, "h": 9}}],
        },
        text="GO",
    )
    assert analysis.captions == ["A kite"]
    assert analysis.tags == ["sky", "outdoor", "kite"] and analysis.objects == ["kite"]
    assert analysis.description == 'A kite. In view: sky, outdoor, kite. Text in the image: "GO".'
    ocr = {
        "regions": [
            {"lines": [{"words": [{"text": "A"}, {"text": "GOAL"}]}, {"words": [{"text": "!"}]}]}
        ]
    }
    assert engine.ocr_text_v3(ocr) == "A GOAL\n!"


# -- the image --------------------------------------------------------------------------------
async def test_corrupt_image_is_a_media_error_before_any_call(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    data = Path(kite.path).read_bytes()
    Path(kite.path).write_bytes(data[: len(data) // 2])  # truncated after it was probed
    with pytest.raises(MediaError, match="corrupt or truncated") as info:
        await engine.image_analysis(ctx, kite, V4)
    assert info.value.path == kite.path
    assert sim.count("azure_vision") == 0


async def test_oversized_image_is_fitted_to_the_limit(
    rctx: RunContext, rec: Recorder, tmp_path: Path
) -> None:
    noise = PILImage.frombytes("RGB", (1300, 1200), os.urandom(1300 * 1200 * 3))
    path = tmp_path / "huge.png"
    noise.save(path, "PNG")
    assert path.stat().st_size > 4 * 1024 * 1024
    image = Image.open(path)
    # v3.2 takes under 4 MB: the PNG is re-encoded (as JPEG, same pixels) to fit, not refused.
    assert (await engine.image_analysis(rctx, image, V3.with_parameters(ocr=False))).captions
    sent = rec.requests[0].content
    assert len(sent) <= 4 * 1024 * 1024
    with PILImage.open(io.BytesIO(sent)) as im:
        assert im.format == "JPEG" and im.size == (1300, 1200)
    assert path.stat().st_size > 4 * 1024 * 1024  # the input file is left alone
    # Image Analysis 4.0 takes up to 20 MB: the same image goes as it is.
    assert (await engine.image_analysis(rctx, image, V4)).captions
    assert rec.requests[-1].content == image.read_bytes()


async def test_tiny_image_names_the_minimum(
    ctx: RunContext, sim: Simulator, tmp_path: Path
) -> None:
    tiny = photo(tmp_path / "tiny.png", size=(64, 40))
    with pytest.raises(MediaError, match=r"64x40 pixels.*at least 50x50"):
        await engine.image_analysis(ctx, tiny, V4)
    assert sim.count("azure_vision") == 0


async def test_webp_is_converted_to_png(rctx: RunContext, rec: Recorder, tmp_path: Path) -> None:
    image = photo(tmp_path / "kite.webp", "WEBP")
    assert image.mime == "image/webp"
    analysis = await engine.image_analysis(rctx, image, V3.with_parameters(ocr=False))
    assert analysis.captions
    with PILImage.open(io.BytesIO(rec.requests[0].content)) as sent:
        assert sent.format == "PNG"


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP"])
async def test_accepted_formats_are_sent_as_they_are(
    rctx: RunContext, rec: Recorder, tmp_path: Path, fmt: str
) -> None:
    image = photo(tmp_path / f"kite.{fmt.lower()}", fmt)
    assert (await engine.image_analysis(rctx, image, V3)).captions
    assert rec.requests[0].content == image.read_bytes()


@pytest.mark.parametrize(
    ("code", "inner"), [("InvalidRequest", "InvalidImageFormat"), ("InvalidImageSize", None)]
)
async def test_azures_refusal_of_the_image_is_a_media_error(
    rctx: RunContext, rec: Recorder, kite: Image, code: str, inner: str | None
) -> None:
    rec.answer = lambda request: azure_error(400, code, "Input data is not a valid image.", inner)
    with pytest.raises(MediaError, match="refused") as info:
        await engine.image_analysis(rctx, kite, V4)
    assert (inner or code) in str(info.value) and "JPEG, PNG, GIF or BMP" in str(info.value)
    assert len(rec.requests) == 1


async def test_other_bad_requests_are_invalid_request_errors(
    rctx: RunContext, rec: Recorder, kite: Image
) -> None:
    rec.answer = lambda request: azure_error(
        400, "InvalidRequest", "The feature 'Caption' is not supported in this region.",
        "NotSupportedFeature",
    )  # fmt: skip
    with pytest.raises(InvalidRequestError) as info:
        await engine.image_analysis(rctx, kite, V4)
    assert info.value.code == "NotSupportedFeature" and "some Azure regions" in str(info.value)
    assert len(rec.requests) == 1


# -- faults -----------------------------------------------------------------------------------
async def test_wrong_key_is_an_authentication_error_without_the_key(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "0123456789abcdef0123456789abcdef"
    ctx = make_ctx(sim.transport(), sim.keys(azure_vision_key=wrong), clock, tmp_path)
    try:
        with pytest.raises(AuthenticationError) as info:
            await engine.image_analysis(ctx, photo(tmp_path / "k.png"), V4)
    finally:
        await ctx.aclose()
    error = info.value
    assert error.status == 401 and error.code == "401" and error.provider == "azure_vision"
    assert "Access denied" in str(error) and "AZURE_VISION_KEY" in str(error)
    assert wrong not in str(error) and wrong not in repr(error)
    assert all(wrong not in r.getMessage() for r in caplog.records)
    assert sim.count("azure_vision") == 1  # not retried


async def test_missing_key_is_a_configuration_error(
    sim: Simulator, tmp_path: Path, kite: Image
) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="AZURE_VISION_KEY"):
            await engine.image_analysis(ctx, kite, V4)
    assert sim.count() == 0


async def test_rate_limit_twice_then_success_honours_retry_after(
    ctx: RunContext, sim: Simulator, clock: Any, kite: Image
) -> None:
    sim.add_fault(kind="rate_limit", provider="azure_vision", first_n=2, retry_after=7)
    assert (await engine.image_analysis(ctx, kite, V4)).captions
    assert clock.waits == [7.0, 7.0]
    assert sim.count("azure_vision") == 3


async def test_rate_limit_beyond_the_cap_fails_with_retry_after(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="rate_limit", provider="azure_vision", retry_after=600)
    with pytest.raises(RateLimitError) as info:
        await engine.image_analysis(ctx, kite, V4)
    assert info.value.retry_after == 600 and info.value.code == "429"
    assert "retry after 600 seconds" in str(info.value)
    assert sim.count("azure_vision") == 1


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "overloaded"])
async def test_server_errors_are_retried_then_succeed(
    ctx: RunContext, sim: Simulator, kite: Image, kind: str
) -> None:
    sim.add_fault(kind=kind, provider="azure_vision", first_n=2)
    assert (await engine.image_analysis(ctx, kite, V4)).captions
    assert sim.count("azure_vision") == 3


@pytest.mark.parametrize(("kind", "status"), [("server_error", 500), ("unavailable", 503)])
async def test_server_error_every_time_gives_up_after_max_attempts(
    ctx: RunContext, sim: Simulator, kite: Image, kind: str, status: int
) -> None:
    sim.add_fault(kind=kind, provider="azure_vision")
    with pytest.raises(TransientProviderError) as info:
        await engine.image_analysis(ctx, kite, V3)
    assert info.value.status == status
    assert sim.count("azure_vision") == ctx.retry.max_attempts


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator, kite: Image) -> None:
    sim.add_fault(kind="hang", provider="azure_vision")
    with pytest.raises(ProviderTimeoutError, match="did not answer in time"):
        await engine.image_analysis(ctx, kite, V4)
    assert sim.count("azure_vision") == ctx.retry.max_attempts


async def test_malformed_body_is_retried_then_a_clear_error(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="malformed", provider="azure_vision", first_n=1)
    assert (await engine.image_analysis(ctx, kite, V4)).captions
    assert sim.count("azure_vision") == 2
    sim.clear_faults()
    sim.add_fault(kind="malformed", provider="azure_vision")
    with pytest.raises(TransientProviderError, match="malformed body") as info:
        await engine.image_analysis(ctx, kite, V4)
    assert info.value.code == "malformed_body" and info.value.provider == "azure_vision"


@pytest.mark.parametrize(
    "body", [[1, 2], {"modelVersion": "2023-10-01"}], ids=["not-an-object", "no-results"]
)
async def test_json_of_the_wrong_shape_is_malformed(
    rctx: RunContext, rec: Recorder, kite: Image, body: Any
) -> None:
    rec.answer = lambda request: httpx.Response(200, json=body)
    with pytest.raises(TransientProviderError) as info:
        await engine.image_analysis(rctx, kite, V4)
    assert info.value.code == "malformed_body"
    assert len(rec.requests) == rctx.retry.max_attempts


async def test_content_policy_fault_is_not_supported_image(
    ctx: RunContext, sim: Simulator, kite: Image
) -> None:
    sim.add_fault(kind="content_policy", provider="azure_vision")
    with pytest.raises(ContentPolicyError) as info:
        await engine.image_analysis(ctx, kite, V4)
    assert info.value.code == "NotSupportedImage" and info.value.status == 400
    assert sim.count("azure_vision") == 1


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "fedcba9876543210fedcba9876543210"
    right = sim.key_for("azure_vision")
    bad = make_ctx(sim.transport(), sim.keys(azure_vision_key=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    image = photo(tmp_path / "k.png")
    failures: list[Exception] = []
    try:
        for call in (
            lambda ctx: engine.image_analysis(ctx, image, V3),  # Image Analysis 3.2
            lambda ctx: engine.image_analysis(ctx, image, V4),  # and 4.0
        ):
            failures += await failures_under_faults(sim, "azure_vision", bad, good, call)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert any(isinstance(f, ContentPolicyError) for f in failures)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


async def test_regional_endpoint_override(clock: Any, tmp_path: Path, kite: Image) -> None:
    sim = Simulator(sleep=clock)
    keys = sim.keys(azure_vision_endpoint="https://westeurope.api.cognitive.microsoft.com/")
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await sim.handle(request)

    ctx = make_ctx(httpx.MockTransport(handler), keys, clock, tmp_path / "out")
    try:
        assert (await engine.image_analysis(ctx, kite, V4)).captions
    finally:
        await ctx.aclose()
    assert str(seen[0].url).startswith(f"https://westeurope.api.cognitive.microsoft.com{V4_PATH}")


async def test_analyze_image_node_on_both_apis(ctx: RunContext, kite: Image) -> None:
    for name in ("azure-vision-4.0", "azure-vision-3.2"):
        analysis = (await AnalyzeImage(name).run(ctx, image=kite))["analysis"]
        assert analysis.description and analysis.text and analysis.sources == ["azure_vision"]


# -- the fake on the wire ---------------------------------------------------------------------
@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {
        "Ocp-Apim-Subscription-Key": sim.key_for("azure_vision"),
        "Content-Type": "application/octet-stream",
    }
    async with sim.client(base_url=ENDPOINT, headers=headers) as c:
        yield c


V4_QUERY = {"api-version": "2023-10-01", "features": "caption,denseCaptions,tags,objects,read"}


async def test_fake_v3_answer_has_azures_fields(client: httpx.AsyncClient, kite: Image) -> None:
    params = {"visualFeatures": "Categories,Adult,Color,Description,Tags,Objects,ImageType"}
    response = await client.post(V3_ANALYZE, params=params, content=kite.read_bytes())
    assert response.status_code == 200
    assert response.headers["apim-request-id"] and "json" in response.headers["content-type"]
    body = response.json()
    caption = body["description"]["captions"][0]
    assert set(caption) == {"text", "confidence"} and 0 < caption["confidence"] < 1
    assert all(set(t) == {"name", "confidence"} for t in body["tags"])
    assert body["description"]["tags"] == [t["name"] for t in body["tags"]]
    for item in body["objects"]:
        assert set(item["rectangle"]) == {"x", "y", "w", "h"} and item["object"]
    assert body["metadata"] == {"width": 320, "height": 240, "format": "Png"}
    assert body["modelVersion"] == "2021-04-01" and body["requestId"]
    assert body["adult"]["isAdultContent"] is False and body["categories"][0]["name"]
    assert body["color"]["dominantColors"] and "imageType" in body
    again = await client.post(V3_ANALYZE, params=params, content=kite.read_bytes())
    assert {k: v for k, v in again.json().items() if k != "requestId"} == {
        k: v for k, v in body.items() if k != "requestId"
    }


async def test_fake_v3_defaults_to_categories_and_answers_ocr(
    client: httpx.AsyncClient, kite: Image
) -> None:
    bare = (await client.post(V3_ANALYZE, content=kite.read_bytes())).json()
    assert "categories" in bare and "description" not in bare
    ocr = (await client.post(V3_OCR, content=kite.read_bytes())).json()
    assert ocr["language"] == "en" and ocr["orientation"] == "Up"
    line = ocr["regions"][0]["lines"][0]
    assert " ".join(w["text"] for w in line["words"]) == describe_image(kite.read_bytes())["text"]
    assert len(line["boundingBox"].split(",")) == 4


async def test_fake_v4_answer_has_azures_fields(client: httpx.AsyncClient, kite: Image) -> None:
    query = {**V4_QUERY, "features": V4_QUERY["features"] + ",people,smartCrops"}
    response = await client.post(V4_PATH, params=query, content=kite.read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert body["modelVersion"] == "2023-10-01"
    assert body["metadata"] == {"width": 320, "height": 240}
    assert set(body["captionResult"]) == {"text", "confidence"}
    dense = body["denseCaptionsResult"]["values"]
    assert dense[0]["text"] == body["captionResult"]["text"]
    assert dense[0]["boundingBox"] == {"x": 0, "y": 0, "w": 320, "h": 240}
    assert all(set(t) == {"name", "confidence"} for t in body["tagsResult"]["values"])
    for item in body["objectsResult"]["values"]:
        assert set(item["boundingBox"]) == {"x", "y", "w", "h"} and item["tags"][0]["name"]
    line = body["readResult"]["blocks"][0]["lines"][0]
    assert line["text"] == describe_image(kite.read_bytes())["text"]
    assert len(line["boundingPolygon"]) == 4 and line["words"][0]["confidence"] > 0.9
    assert body["peopleResult"] == {"values": []}
    assert body["smartCropsResult"]["values"][0]["boundingBox"]["w"] <= 320


@pytest.mark.parametrize(
    ("path", "params", "outer_message"),
    [
        (V4_PATH, V4_QUERY, "Image format is not valid."),
        (V3_ANALYZE, {"visualFeatures": "Description"}, "Input data is not a valid image."),
        (V3_OCR, {}, "Input data is not a valid image."),
    ],
)
async def test_fake_refuses_a_body_that_is_not_an_image(
    client: httpx.AsyncClient, path: str, params: dict[str, str], outer_message: str
) -> None:
    response = await client.post(path, params=params, content=b"GIF89a this is not an image")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidRequest" and error["message"] == outer_message
    assert error["innererror"] == {
        "code": "InvalidImageFormat",
        "message": "Input data is not a valid image.",
    }
    assert ("x-ms-error-code" in response.headers) == (path == V4_PATH)


async def test_fake_checks_sizes_per_api_version(client: httpx.AsyncClient, tmp_path: Path) -> None:
    small = photo(tmp_path / "small.png", size=(40, 60)).read_bytes()
    v4 = (await client.post(V4_PATH, params=V4_QUERY, content=small)).json()["error"]
    assert (
        v4["innererror"]["code"] == "InvalidImageSize"
        and "smaller than 50" in v4["innererror"]["message"]
    )
    v3 = (await client.post(V3_ANALYZE, content=small)).json()["error"]
    assert v3["innererror"] == {"code": "InvalidImageSize", "message": "Image size is too small."}
    big = b"\x89PNG" + bytes(4 * 1024 * 1024)
    v3 = (await client.post(V3_OCR, content=big)).json()["error"]
    assert v3["innererror"]["message"] == "Input image is too large."
    webp = photo(tmp_path / "k.webp", "WEBP").read_bytes()
    assert (await client.post(V4_PATH, params=V4_QUERY, content=webp)).status_code == 200
    v3 = (await client.post(V3_ANALYZE, content=webp)).json()["error"]
    assert v3["innererror"]["code"] == "InvalidImageFormat"


@pytest.mark.parametrize(
    ("path", "params", "status", "inner"),
    [
        (V4_PATH, {"api-version": "2023-10-01"}, 400, "InvalidArgument"),
        (V4_PATH, {**V4_QUERY, "features": "caption,faces"}, 400, "InvalidArgument"),
        (V4_PATH, {**V4_QUERY, "language": "fr"}, 400, "NotSupportedLanguage"),
        (V4_PATH, {**V4_QUERY, "smartcrops-aspect-ratios": "0.5"}, 400, "InvalidArgument"),
        (V4_PATH, {**V4_QUERY, "api-version": "2022-10-12-preview"}, 404, None),
        (V3_ANALYZE, {"visualFeatures": "Description,Captions"}, 400, "NotSupportedVisualFeature"),
        (V3_ANALYZE, {"visualFeatures": "Tags", "language": "xx"}, 400, "NotSupportedLanguage"),
        ("/vision/v3.1/describe", {}, 404, None),
    ],
)
async def test_fake_validates_queries(
    client: httpx.AsyncClient,
    kite: Image,
    path: str,
    params: dict[str, str],
    status: int,
    inner: str | None,
) -> None:
    response = await client.post(path, params=params, content=kite.read_bytes())
    assert response.status_code == status
    error = response.json()["error"]
    if inner is None:
        assert error == {"code": "404", "message": "Resource not found"}
    else:
        assert error["code"] == "InvalidRequest" and error["innererror"]["code"] == inner


async def test_fake_401_shapes_and_other_content_types(sim: Simulator, kite: Image) -> None:
    async with sim.client(base_url=ENDPOINT) as client:
        missing = await client.post(V4_PATH, params=V4_QUERY, content=kite.read_bytes())
        wrong = await client.post(
            V4_PATH,
            params=V4_QUERY,
            content=kite.read_bytes(),
            headers={"Ocp-Apim-Subscription-Key": "not-the-key"},
        )
        query_key = await client.post(
            V4_PATH,
            params={**V4_QUERY, "subscription-key": sim.key_for("azure_vision")},
            content=kite.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        url = "https://images.example.com/kite.png"
        sim.serve_download(url, httpx.Response(200, content=kite.read_bytes()))
        key = {"Ocp-Apim-Subscription-Key": sim.key_for("azure_vision")}
        by_url = await client.post(V4_PATH, params=V4_QUERY, json={"url": url}, headers=key)
        unreachable = await client.post(
            V4_PATH, params=V4_QUERY, json={"url": url + "?gone"}, headers=key
        )
        text = await client.post(
            V4_PATH, params=V4_QUERY, content=b"x", headers={**key, "Content-Type": "text/plain"}
        )
    assert missing.status_code == 401 and "missing subscription key" in missing.text
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. "
            "Make sure to provide a valid key for an active subscription and use a correct "
            "regional API endpoint for your resource.",
        }
    }
    assert query_key.status_code == 200
    assert by_url.status_code == 200 and by_url.json()["captionResult"]["text"]
    assert unreachable.json()["error"]["innererror"]["code"] == "InvalidImageUrl"
    assert text.status_code == 415
