"""The Replicate engines against the Replicate fake: predictions, polling, outputs, faults."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable
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
from calliope_graph.engines import replicate as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    InvalidRequestError,
    MediaError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageAnalysis, MediaStore
from calliope_graph.nodes import AnalyzeImage, TextToText
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, story_text

API = "https://api.replicate.com"
LLAMA = catalog.get("replicate-llama-3")
FLUX = catalog.get("replicate-flux-schnell")
SDXL = catalog.get("replicate-sdxl")
LLAVA = catalog.get("replicate-llava")
LLAVA_VERSION = "80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


class ReplicateRecorder(Recorder):
    """Rewrites touch only Replicate's API; also keeps every prediction it answered."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim, host="api.replicate.com")
        self.answers: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        response = await super().__call__(request)
        if request.url.host == self.host:
            await response.aread()
            try:
                body = json.loads(response.content)
            except ValueError:
                body = None
            if isinstance(body, dict) and "status" in body:
                self.answers.append(body)
        return response

    def created(self) -> list[dict[str, Any]]:
        return [
            json.loads(r.content)
            for r in self.requests
            if r.method == "POST" and r.url.path.endswith("/predictions")
        ]

    def polls(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET" and "/predictions/" in r.url.path]

    def statuses(self) -> list[str]:
        return [str(a["status"]) for a in self.answers]


@pytest.fixture
def rec(sim: Simulator) -> ReplicateRecorder:
    return ReplicateRecorder(sim)


def replicate(model: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug="test-replicate",
        model_parameters=params,
        model=InferenceModel(
            slug="test", provider=InferenceModelProvider.REPLICATE, provider_model_name=model
        ),
    )


@pytest.fixture
def photo(tmp_path: Path) -> Image:
    path = tmp_path / "photo.png"
    path.write_bytes(image_bytes("a red kite over a harbour", 320, 240))
    return Image.open(path)


def predictions(sim: Simulator) -> list[str]:
    return list(sim.state("replicate").get("predictions", {}))


def swap_output(output: Any) -> Callable[[httpx.Request, httpx.Response], httpx.Response]:
    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json()
        if isinstance(body, dict) and body.get("status") == "succeeded":
            return httpx.Response(response.status_code, json={**body, "output": output})
        return response

    return rewrite


# -- registration and the request -----------------------------------------------------------
def test_replicate_serves_three_conversions() -> None:
    assert get_engine(Conversion.TEXT_TO_TEXT, "replicate") is engine.text_to_text
    assert get_engine(Conversion.TEXT_TO_IMAGE, "replicate") is engine.text_to_image
    assert get_engine(Conversion.IMAGE_ANALYSIS, "replicate") is engine.image_analysis


async def test_text_from_an_official_model_in_one_request(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator, clock: Any
) -> None:
    text = await engine.text_to_text(rctx, "Once upon a time in the harbour", LLAMA)
    (create,) = rec.requests
    assert str(create.url) == f"{API}/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    assert create.headers["authorization"] == f"Bearer {sim.key_for('replicate')}"
    assert create.headers["prefer"] == "wait=60"
    assert create.extensions["timeout"]["read"] == 65.0  # held up to 60 s, read a bit longer
    assert rec.created() == [
        {
            "input": {
                "prompt": "Once upon a time in the harbour",
                "max_new_tokens": 400,
                "temperature": 0.7,
            }
        }
    ]
    assert rec.statuses() == ["succeeded"]
    expected = story_text(
        "Once upon a time in the harbour", sentences=4, model="meta/meta-llama-3-8b-instruct"
    )
    assert text == expected  # the streamed tokens, joined
    assert clock.waits == []
    assert sim.calls[("replicate", "models.predictions.create")] == 1


async def test_only_model_inputs_are_sent(rctx: RunContext, rec: ReplicateRecorder) -> None:
    config = LLAMA.with_parameters(
        system_prompt="You tell sea stories.",
        poll_timeout=120,
        poll_interval=2,
        wait=10,
        max_download_bytes=5,
        cancel_on_timeout=False,
        top_p=None,
        input={"seed": 3, "prompt": "ignored"},
    )
    await engine.text_to_text(rctx, "A gull", config)
    (body,) = rec.created()
    assert body["input"] == {
        "seed": 3,
        "prompt": "A gull",
        "system_prompt": "You tell sea stories.",
        "max_new_tokens": 400,
        "temperature": 0.7,
    }
    assert rec.requests[0].headers["prefer"] == "wait=10"


async def test_without_wait_the_prediction_is_polled(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator, clock: Any
) -> None:
    text = await engine.text_to_text(rctx, "A gull", LLAMA.with_parameters(wait=0))
    assert "prefer" not in rec.requests[0].headers
    (prediction_id,) = predictions(sim)
    assert rec.statuses() == ["starting", "processing", "succeeded"]
    assert [str(p.url) for p in rec.polls()] == [f"{API}/v1/predictions/{prediction_id}"] * 2
    assert all(
        p.headers["authorization"] == f"Bearer {sim.key_for('replicate')}" for p in rec.polls()
    )
    assert clock.waits == [0.5, 0.5]
    processing = rec.answers[1]
    assert processing["started_at"] and processing["logs"].startswith("Using seed:")
    assert text.startswith("".join(processing["output"]))  # partial tokens while processing
    done = rec.answers[-1]
    assert done["completed_at"] and done["metrics"]["predict_time"] > 0


async def test_a_slow_model_answers_starting_then_is_polled(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 3
    sim.state("replicate")["step_seconds"] = 30.0  # 90 s of work: more than the 60 s wait
    sim.state("replicate")["cold_start"] = 2
    await engine.text_to_text(rctx, "A gull", LLAMA)
    assert rec.requests[0].headers["prefer"] == "wait=60"
    assert rec.statuses() == [
        "starting",
        "starting",
        "starting",
        "processing",
        "processing",
        "succeeded",
    ]
    assert len(clock.waits) == 5


async def test_a_short_wait_still_finishes_a_fast_model(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator
) -> None:
    await engine.text_to_text(rctx, "A gull", LLAMA.with_parameters(wait=5))
    assert rec.statuses() == ["succeeded"]
    sim.poll_steps = 9
    await engine.text_to_text(rctx, "A gull", LLAMA.with_parameters(wait=5))
    assert rec.statuses()[1] == "starting"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("meta/meta-llama-3-8b-instruct", ("meta", "meta-llama-3-8b-instruct", None)),
        (f"yorickvp/llava-13b:{LLAVA_VERSION}", ("yorickvp", "llava-13b", LLAVA_VERSION)),
        (LLAVA_VERSION, (None, None, LLAVA_VERSION)),
    ],
)
def test_model_references(model: str, expected: tuple[str | None, ...]) -> None:
    assert engine.model_ref(model) == engine.ModelRef(*expected)


@pytest.mark.parametrize("model", ["llama3", "a/b/c", "owner/name:", ""])
async def test_a_bad_model_reference_fails_before_any_call(
    ctx: RunContext, sim: Simulator, model: str
) -> None:
    with pytest.raises(ConfigurationError, match="owner/name"):
        await engine.text_to_text(ctx, "x", replicate(model))
    assert sim.count() == 0


async def test_a_version_goes_to_the_predictions_endpoint(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator
) -> None:
    await engine.text_to_text(rctx, "x", replicate("meta/meta-llama-3-8b-instruct", wait=False))
    image = await engine.text_to_image(rctx, "a kite", SDXL, output_name="kite.png")
    create = [r for r in rec.requests if r.method == "POST"][-1]
    assert str(create.url) == f"{API}/v1/predictions"
    assert rec.created()[-1] == {"version": SDXL_VERSION, "input": {"prompt": "a kite"}}
    assert image.mime == "image/png"
    assert sim.calls[("replicate", "predictions.create")] == 1


# -- text -> image ---------------------------------------------------------------------------
async def test_flux_image_is_downloaded_without_the_key(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator
) -> None:
    image = await engine.text_to_image(
        rctx, "a red kite", FLUX, output_name="art/kite.png", width=1280, height=720
    )
    assert rec.created() == [{"input": {"aspect_ratio": "16:9", "prompt": "a red kite"}}]
    (url,) = rec.answers[-1]["output"]
    assert url.startswith("https://replicate.delivery/") and url.endswith("/out-0.webp")
    download = rec.requests[-1]
    assert str(download.url) == url and "authorization" not in download.headers
    assert image.path.endswith("art/kite.webp") and image.mime == "image/webp"
    assert not (rctx.store.root / "art" / "kite.png").exists()
    with PILImage.open(image.path) as im:
        assert im.format == "WEBP" and im.size == (1360, 768)


async def test_a_single_url_output_and_explicit_inputs(
    rctx: RunContext, rec: ReplicateRecorder
) -> None:
    config = replicate("black-forest-labs/flux-1.1-pro", output_format="png", aspect_ratio="3:2")
    image = await engine.text_to_image(rctx, "x", config, output_name="x", width=500, height=500)
    assert rec.created()[0]["input"] == {"aspect_ratio": "3:2", "output_format": "png",
                                         "prompt": "x"}  # fmt: skip
    assert isinstance(rec.answers[-1]["output"], str)
    assert image.mime == "image/png" and image.path.endswith("x.png")


@pytest.mark.parametrize(
    ("model", "size", "inputs"),
    [
        ("black-forest-labs/flux-schnell", (900, 1600), {"aspect_ratio": "9:16"}),
        ("black-forest-labs/flux-schnell", (1000, None), {"aspect_ratio": "1:1"}),
        ("black-forest-labs/flux-1.1-pro", (800, 1000), {"aspect_ratio": "4:5"}),
        ("stability-ai/sdxl:abc", (1000, 701), {"width": 1000, "height": 704}),
        ("someone/new-model", (640, 480), {"width": 640, "height": 480}),
        ("someone/new-model", (None, None), {}),
    ],
)
def test_size_inputs_follow_the_model(
    model: str, size: tuple[int | None, int | None], inputs: dict[str, Any]
) -> None:
    assert engine._size_inputs(model, *size) == inputs


async def test_an_empty_output_list_is_empty_output(
    rctx: RunContext, rec: ReplicateRecorder
) -> None:
    rec.rewrite = swap_output([])
    with pytest.raises(EmptyOutputError, match="safety checker drops every image"):
        await engine.text_to_image(rctx, "x", FLUX, output_name="x.png")


async def test_an_empty_fault_gives_nothing_to_each_conversion(
    ctx: RunContext, sim: Simulator, photo: Image
) -> None:
    sim.add_fault(kind="empty", provider="replicate")
    assert await engine.text_to_text(ctx, "x", LLAMA) == ""
    with pytest.raises(EmptyOutputError):
        await TextToText("replicate-llama-3", empty_is_error=True).run(ctx, text="x")
    for config in (FLUX, replicate("black-forest-labs/flux-1.1-pro")):
        with pytest.raises(EmptyOutputError, match="without an image"):
            await engine.text_to_image(ctx, "x", config, output_name="x.png")
    with pytest.raises(EmptyOutputError, match="empty answer"):
        await engine.image_analysis(ctx, photo, LLAVA)


async def test_an_image_over_the_download_cap_is_refused(ctx: RunContext) -> None:
    with pytest.raises(MediaError, match="over the 1000-byte download cap"):
        await engine.text_to_image(
            ctx, "x", FLUX.with_parameters(max_download_bytes=1000), output_name="big.png"
        )
    assert not list(ctx.store.root.glob("big*")) and not list(ctx.store.root.glob(".big*"))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://replicate.delivery/x.png", "//replicate.delivery/x"]
)
async def test_an_output_url_that_is_not_http_is_refused(
    rctx: RunContext, rec: ReplicateRecorder, url: str
) -> None:
    rec.rewrite = swap_output([url])
    with pytest.raises(MediaError, match="only http\\(s\\) URLs are fetched"):
        await engine.text_to_image(rctx, "x", FLUX, output_name="x.png")


async def test_a_data_uri_output_is_decoded(rctx: RunContext, rec: ReplicateRecorder) -> None:
    raw = image_bytes("inline", 64, 48, "JPEG")
    rec.rewrite = swap_output(["data:image/jpeg;base64," + base64.b64encode(raw).decode()])
    image = await engine.text_to_image(rctx, "x", FLUX, output_name="x.png")
    assert image.mime == "image/jpeg" and Path(image.path).read_bytes() == raw
    rec.rewrite = swap_output(["data:image/png;base64," + "A" * 4000])
    with pytest.raises(MediaError, match="download cap"):
        await engine.text_to_image(
            rctx, "x", FLUX.with_parameters(max_download_bytes=100), output_name="y.png"
        )


async def test_a_download_that_is_not_an_image_is_cleaned_up(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator
) -> None:
    url = "https://replicate.delivery/xezq/page/out-0.png"
    sim.serve_download(url, httpx.Response(200, text="<html>expired</html>"))
    rec.rewrite = swap_output([url])
    with pytest.raises(MediaError, match="not an image"):
        await engine.text_to_image(rctx, "x", FLUX, output_name="x.png")
    assert not list(rctx.store.root.glob("x*"))


# -- image analysis --------------------------------------------------------------------------
async def test_llava_describes_the_image_as_json(
    rctx: RunContext, rec: ReplicateRecorder, photo: Image
) -> None:
    analysis = await engine.image_analysis(rctx, photo, LLAVA)
    (body,) = rec.created()
    assert str(rec.requests[0].url) == f"{API}/v1/predictions"
    assert body["version"] == LLAVA_VERSION
    assert body["input"] == {"image": photo.data_url(), "prompt": engine.ANALYSIS_PROMPT}
    assert isinstance(analysis, ImageAnalysis) and analysis.sources == ["replicate"]
    assert analysis.description.startswith("The image shows a ")
    # Only what the pixels show: colours and light, the simulator's own mark as text, and
    # no invented objects.
    assert analysis.captions and analysis.tags and analysis.objects == []
    assert analysis.text == "simulated" and analysis.tags[0] in analysis.all_tags_and_objects


async def test_a_prose_answer_becomes_the_description(
    rctx: RunContext, rec: ReplicateRecorder, photo: Image
) -> None:
    config = LLAVA.with_parameters(analysis_prompt="What is in this picture?", max_tokens=200)
    analysis = await engine.image_analysis(rctx, photo, config)
    assert rec.created()[0]["input"]["prompt"] == "What is in this picture?"
    assert rec.created()[0]["input"]["max_tokens"] == 200
    assert analysis.description.startswith("The image shows")
    assert "tones" in analysis.description
    assert analysis.captions == [analysis.description.split(". ")[0] + "."]
    assert analysis.tags == []


async def test_other_image_formats_are_sent_as_png(
    rctx: RunContext, rec: ReplicateRecorder, tmp_path: Path
) -> None:
    path = tmp_path / "scan.bmp"
    path.write_bytes(image_bytes("scan", 80, 60, "BMP"))
    await engine.image_analysis(rctx, Image.open(path), LLAVA)
    assert rec.created()[0]["input"]["image"].startswith("data:image/png;base64,")


async def test_an_unreadable_image_fails_as_a_bad_input(
    ctx: RunContext, tmp_path: Path, sim: Simulator
) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(image_bytes("x", 32, 32))
    image = Image.open(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt after probing
    # Caught while preparing the image, before a prediction is paid for.
    with pytest.raises(MediaError, match=r"broken\.png") as info:
        await engine.image_analysis(ctx, image, LLAVA)
    assert info.value.path == str(path)
    assert sim.count("replicate") == 0


# -- failures --------------------------------------------------------------------------------
async def test_nsfw_is_a_content_policy_error_and_not_resubmitted(
    ctx: RunContext, sim: Simulator
) -> None:
    sim.add_fault(kind="content_policy", provider="replicate", pattern="explosion")
    assert await engine.text_to_image(ctx, "a calm sea", FLUX, output_name="a.png")
    with pytest.raises(ContentPolicyError, match="NSFW content") as info:
        await engine.text_to_image(ctx, "an explosion", FLUX, output_name="b.png")
    assert info.value.code == "content_filtered"
    assert predictions(sim)[-1] in str(info.value)
    assert sim.calls[("replicate", "models.predictions.create")] == 2


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (SDXL, "NSFW content detected"),
        (LLAMA, "flagged as sensitive"),
    ],
)
async def test_each_model_refuses_in_its_own_words(
    ctx: RunContext, sim: Simulator, config: ModelConfig, needle: str
) -> None:
    sim.add_fault(kind="content_policy", provider="replicate")
    with pytest.raises(ContentPolicyError, match=needle):
        if config is LLAMA:
            await engine.text_to_text(ctx, "x", config)
        else:
            await engine.text_to_image(ctx, "x", config, output_name="x.png")


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (
            "All generated images contained NSFW content. Try running it again with a "
            "different prompt.",
            ContentPolicyError,
        ),
        ("The input or output was flagged as sensitive. (E005)", ContentPolicyError),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", TransientProviderError),
        ("Prediction timed out", TransientProviderError),
        ("ValueError: width must be a multiple of 8", InvalidRequestError),
        ("Something unexpected happened in predict()", ProviderError),
    ],
)
def test_failures_map_to_the_taxonomy(error: str, cls: type[Exception]) -> None:
    err = engine.error_for_failure("p-1", error, "step 1\nstep 2\n")
    assert type(err) is cls
    assert "p-1" in str(err) and error[:20] in str(err)
    assert "last log line: step 2" in str(err)


async def test_a_failed_prediction_reports_the_model_error_and_logs(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator
) -> None:
    sim.state("replicate")["fail"] = "CUDA out of memory. Tried to allocate 20.00 MiB"
    with pytest.raises(TransientProviderError, match="CUDA out of memory") as info:
        await engine.text_to_text(rctx, "x", LLAMA)
    assert rec.answers[-1]["status"] == "failed"
    assert info.value.code == "model_error"
    assert predictions(sim)[0] in str(info.value)
    assert sim.count("replicate") == 1  # a model failure is not an HTTP retry


async def test_a_canceled_prediction_is_a_provider_error_not_retried(
    sim: Simulator, clock: Any, tmp_path: Path
) -> None:
    async def cancel_on_first_poll(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/predictions/"):
            async with sim.client() as client:
                await client.post(
                    f"{request.url}/cancel",
                    headers={"Authorization": request.headers["authorization"]},
                )
        return await sim.handle(request)

    ctx = make_ctx(httpx.MockTransport(cancel_on_first_poll), sim.keys(), clock, tmp_path)
    try:
        with pytest.raises(ProviderError, match="was cancelled") as info:
            await engine.text_to_text(ctx, "x", LLAMA.with_parameters(wait=0))
    finally:
        await ctx.aclose()
    assert type(info.value) is ProviderError and info.value.code == "cancelled"
    assert sim.calls[("replicate", "predictions.cancel")] == 1
    assert sim.calls[("replicate", "models.predictions.create")] == 1


async def test_an_aborted_prediction_is_a_timeout(rctx: RunContext, rec: ReplicateRecorder) -> None:
    def abort(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return httpx.Response(200, json={**response.json(), "status": "aborted"})

    rec.rewrite = abort
    with pytest.raises(ProviderTimeoutError, match="Cancel-After") as info:
        await engine.text_to_text(rctx, "x", LLAMA)
    assert info.value.job_id and info.value.job_id in str(info.value)


# -- polling bounds ----------------------------------------------------------------------------
async def test_a_prediction_that_never_finishes_times_out_and_is_cancelled(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 10**6
    with pytest.raises(ProviderTimeoutError) as info:
        await engine.text_to_image(ctx, "x", FLUX, output_name="x.png")
    (prediction_id,) = predictions(sim)
    assert info.value.job_id == prediction_id and prediction_id in str(info.value)
    assert "processing" in str(info.value) and "poll_timeout" in str(info.value)
    assert "was cancelled" in str(info.value)
    assert clock.now == pytest.approx(30.0)
    assert sim.calls[("replicate", "predictions.get")] == 60
    assert sim.calls[("replicate", "predictions.cancel")] == 1
    assert sim.state("replicate")["predictions"][prediction_id].canceled


async def test_poll_parameters_override_the_context(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.poll_steps = 10**6
    config = LLAMA.with_parameters(poll_interval=6, poll_timeout=20, cancel_on_timeout=False)
    with pytest.raises(ProviderTimeoutError, match="may still finish"):
        await engine.text_to_text(ctx, "x", config)
    assert clock.waits == [6.0, 6.0, 6.0, 2.0]
    assert sim.calls[("replicate", "predictions.cancel")] == 0


async def test_polls_never_follow_a_foreign_url(
    rctx: RunContext, rec: ReplicateRecorder, sim: Simulator
) -> None:
    def elsewhere(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        body = response.json()
        if request.method == "POST" and isinstance(body, dict) and "urls" in body:
            urls = {**body["urls"], "get": "https://collector.example/v1/predictions/x"}
            return httpx.Response(response.status_code, json={**body, "urls": urls})
        return response

    rec.rewrite = elsewhere
    await engine.text_to_text(rctx, "x", LLAMA.with_parameters(wait=0))
    assert {p.url.host for p in rec.polls()} == {"api.replicate.com"}


# -- HTTP errors and faults ------------------------------------------------------------------
async def test_invalid_inputs_name_the_field_and_are_not_retried(
    ctx: RunContext, sim: Simulator
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await engine.text_to_image(ctx, "x", FLUX.with_parameters(num_outputs=9), output_name="x")
    assert info.value.status == 422 and info.value.code == "input_validation_failed"
    assert "input.num_outputs: Must be less than or equal to 4" in str(info.value)
    assert sim.count("replicate") == 1


async def test_unknown_models_and_versions(ctx: RunContext) -> None:
    with pytest.raises(InvalidRequestError, match="check the model name") as missing:
        await engine.text_to_text(ctx, "x", replicate("nobody/nothing"))
    assert missing.value.status == 404
    with pytest.raises(InvalidRequestError, match="does not exist") as version:
        await engine.text_to_text(ctx, "x", replicate("nobody/nothing:" + "0" * 64))
    assert version.value.status == 422 and version.value.code == "invalid_version_or_not_permitted"
    with pytest.raises(InvalidRequestError, match="check the model name"):
        await engine.text_to_text(ctx, "x", replicate("yorickvp/llava-13b"))  # not official


async def test_rate_limit_twice_then_success_honours_retry_after(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.add_fault(kind="rate_limit", provider="replicate", first_n=2, retry_after=7)
    assert await engine.text_to_text(ctx, "x", LLAMA)
    assert clock.waits == [7.0, 7.0]
    assert sim.count("replicate") == 3


async def test_rate_limit_without_a_header_waits_what_the_body_says(
    ctx: RunContext, sim: Simulator, clock: Any
) -> None:
    sim.add_fault(kind="rate_limit", provider="replicate", first_n=1, retry_after=None)
    assert await engine.text_to_text(ctx, "x", LLAMA)
    assert clock.waits == [30.0]  # "Your rate limit resets in ~30s."


async def test_rate_limit_every_time_is_a_rate_limit_error(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="rate_limit", provider="replicate", retry_after=1)
    with pytest.raises(RateLimitError, match="Request was throttled"):
        await engine.text_to_text(ctx, "x", LLAMA)
    assert sim.count("replicate") == ctx.retry.max_attempts


@pytest.mark.parametrize(
    ("kind", "endpoint", "creates", "polls"),
    [
        ("server_error", "create", 3, 2),
        ("unavailable", "predictions.get", 1, 4),
        ("overloaded", "predictions.get", 1, 4),
    ],
)
async def test_server_errors_are_retried(
    ctx: RunContext, sim: Simulator, kind: str, endpoint: str, creates: int, polls: int
) -> None:
    sim.add_fault(kind=kind, provider="replicate", endpoint=endpoint, first_n=2)
    assert await engine.text_to_text(ctx, "x", LLAMA.with_parameters(wait=0))
    assert sim.count("replicate", "create") == creates
    assert sim.count("replicate", "predictions.get") == polls


async def test_hang_becomes_a_timeout(ctx: RunContext, sim: Simulator, clock: Any) -> None:
    sim.add_fault(kind="hang", provider="replicate")
    with pytest.raises(ProviderTimeoutError, match="did not answer in time"):
        await engine.text_to_text(ctx, "x", LLAMA)
    assert sim.count("replicate") == ctx.retry.max_attempts
    assert clock.waits[0] == 65.0  # the hang lasted the read timeout set for Prefer: wait


@pytest.mark.parametrize("endpoint", ["create", "predictions.get"])
async def test_malformed_answers_are_retried(
    ctx: RunContext, sim: Simulator, endpoint: str
) -> None:
    sim.add_fault(kind="malformed", provider="replicate", endpoint=endpoint, first_n=1)
    assert await engine.text_to_text(ctx, "x", LLAMA.with_parameters(wait=0))
    creates = sim.calls[("replicate", "models.predictions.create")]
    assert creates == (2 if endpoint == "create" else 1)


async def test_auth_fault_is_not_retried(ctx: RunContext, sim: Simulator) -> None:
    sim.add_fault(kind="auth", provider="replicate")
    with pytest.raises(AuthenticationError, match="Unauthenticated") as info:
        await engine.text_to_text(ctx, "x", LLAMA)
    assert info.value.code == "unauthenticated"
    assert sim.count("replicate") == 1


async def test_missing_key_is_a_configuration_error(sim: Simulator, tmp_path: Path) -> None:
    async with sim.client() as client:
        ctx = RunContext(client=client, keys=KeysModel(), store=MediaStore(tmp_path))
        with pytest.raises(ConfigurationError, match="REPLICATE_API_TOKEN"):
            await engine.text_to_text(ctx, "x", LLAMA)
    assert sim.count() == 0


async def test_wrong_key_is_refused_without_leaking_it(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "r8_" + "Kq7" * 12
    ctx = make_ctx(sim.transport(), sim.keys(replicate_api_token=wrong), clock, tmp_path)
    try:
        with pytest.raises(AuthenticationError, match="valid authentication token") as info:
            await engine.text_to_text(ctx, "x", LLAMA)
    finally:
        await ctx.aclose()
    assert info.value.status == 401
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert all(wrong not in r.getMessage() for r in caplog.records)


async def test_secrets_never_reach_errors_or_logs(
    sim: Simulator, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "r8_" + "Wx4" * 12
    right = sim.key_for("replicate")
    bad = make_ctx(sim.transport(), sim.keys(replicate_api_token=wrong), clock, tmp_path)
    good = make_ctx(sim.transport(), sim.keys(), clock, tmp_path)
    failures: list[Exception] = []
    try:
        failures += await failures_under_faults(
            sim,
            "replicate",
            bad,
            good,
            lambda ctx: engine.text_to_image(ctx, "x", FLUX, output_name="x.png"),
        )
        sim.state("replicate")["fail"] = f"crashed while using token {right}"
        with pytest.raises(ProviderError) as leaked:
            await engine.text_to_text(good, "x", LLAMA)
        failures.append(leaked.value)
        sim.poll_steps = 10**6
        with pytest.raises(ProviderTimeoutError) as stuck:
            await engine.text_to_text(good, "x", LLAMA)
        failures.append(stuck.value)
    finally:
        await bad.aclose()
        await good.aclose()
    assert isinstance(failures[0], AuthenticationError)
    assert isinstance(failures[-3], ContentPolicyError)
    assert "crashed while using token ***" in str(failures[-2])
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_secrets_absent((wrong, right), failures, caplog.records)


# -- the fake's own checks ------------------------------------------------------------------
def auth(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.key_for('replicate')}"}


async def test_fake_401s(sim: Simulator) -> None:
    url = f"{API}/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    async with sim.client() as client:
        missing = await client.post(url, json={"input": {}})
        wrong = await client.post(url, json={"input": {}}, headers={"Authorization": "Bearer r8_x"})
        token = await client.get(
            f"{API}/v1/models/meta/meta-llama-3-8b-instruct",
            headers={"Authorization": f"Token {sim.key_for('replicate')}"},
        )
    assert missing.status_code == 401
    assert missing.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass an authentication token",
        "status": 401,
    }
    assert wrong.json()["detail"] == "You did not pass a valid authentication token"
    assert token.status_code == 200 and token.json()["is_official"] is True


@pytest.mark.parametrize(
    ("path", "body", "kinds", "detail"),
    [
        ("/v1/predictions", {"input": {}}, ["required"], "- version is required\n"),
        ("/v1/predictions", {"version": LLAVA_VERSION, "input": {}, "model": "x"},
         ["additional_property_not_allowed"], "- Additional property model is not allowed\n"),
        ("/v1/predictions", {"version": LLAVA_VERSION, "input": {"top_p": 2}},
         ["required", "required", "number_lte"],
         "- input: image is required\n- input: prompt is required\n"
         "- input.top_p: Must be less than or equal to 1\n"),
        ("/v1/models/black-forest-labs/flux-schnell/predictions",
         {"input": {"prompt": "x", "output_format": "gif", "num_inference_steps": 8}},
         ["enum", "number_lte"],
         '- input.output_format: output_format must be one of the following: "webp", "jpg", '
         '"png"\n- input.num_inference_steps: Must be less than or equal to 4\n'),
        ("/v1/models/black-forest-labs/flux-schnell/predictions",
         {"input": {"prompt": 3}}, ["invalid_type"],
         "- input.prompt: Invalid type. Expected: string, given: integer\n"),
        ("/v1/models/black-forest-labs/flux-schnell/predictions",
         {"version": SDXL_VERSION, "input": {"prompt": "x"}},
         ["additional_property_not_allowed"], "- Additional property version is not allowed\n"),
    ],
)  # fmt: skip
async def test_fake_validates_like_replicate(
    sim: Simulator, path: str, body: dict[str, Any], kinds: list[str], detail: str
) -> None:
    async with sim.client() as client:
        response = await client.post(f"{API}{path}", json=body, headers=auth(sim))
    assert response.status_code == 422
    problem = response.json()
    assert problem["title"] == "Input validation failed" and problem["status"] == 422
    assert problem["detail"] == detail
    assert [f["type"] for f in problem["invalid_fields"]] == kinds


async def test_fake_prediction_lifecycle(sim: Simulator) -> None:
    sim.poll_steps = 2
    async with sim.client() as client:
        created = await client.post(
            f"{API}/v1/predictions",
            json={"version": SDXL_VERSION, "input": {"prompt": "x", "num_outputs": 2}},
            headers=auth(sim),
        )
        prediction = created.json()
        first = await client.get(prediction["urls"]["get"], headers=auth(sim))
        second = await client.get(prediction["urls"]["get"], headers=auth(sim))
        again = await client.get(prediction["urls"]["get"], headers=auth(sim))
        cancel = await client.post(prediction["urls"]["cancel"], headers=auth(sim))
        unknown = await client.get(f"{API}/v1/predictions/nope", headers=auth(sim))
        png = await client.get(second.json()["output"][1])
    assert created.status_code == 201
    assert prediction["status"] == "starting" and prediction["output"] is None
    assert len(prediction["id"]) == 26 and prediction["model"] == "stability-ai/sdxl"
    assert set(prediction["urls"]) == {"get", "cancel", "stream", "web"}
    assert first.json()["status"] == "processing"
    assert second.json()["status"] == "succeeded" and len(second.json()["output"]) == 2
    assert again.json() == second.json()  # a finished prediction no longer changes
    assert cancel.json()["status"] == "succeeded"  # too late to cancel
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "The requested resource could not be found.", "status": 404}
    assert png.headers["content-type"] == "image/png"
    assert PILImage.open(io.BytesIO(png.content)).size == (1024, 1024)


async def test_fake_serves_versions_for_the_sdk(sim: Simulator) -> None:
    async with sim.client() as client:
        version = await client.get(
            f"{API}/v1/models/yorickvp/llava-13b/versions/{LLAVA_VERSION}", headers=auth(sim)
        )
        wrong = await client.get(
            f"{API}/v1/models/yorickvp/llava-13b/versions/{SDXL_VERSION}", headers=auth(sim)
        )
    schema = version.json()["openapi_schema"]["components"]["schemas"]
    assert version.json()["id"] == LLAVA_VERSION
    assert schema["Output"]["x-cog-array-type"] == "iterator"
    assert schema["Input"]["required"] == ["image", "prompt"]
    assert wrong.status_code == 404


async def test_nodes_run_on_replicate(ctx: RunContext, sim: Simulator, photo: Image) -> None:
    text = await TextToText("replicate-llama-3").run(ctx, text="The lighthouse keeper")
    assert text["text"].strip()
    analysis = await AnalyzeImage("replicate-llava").run(ctx, image=photo)
    assert isinstance(analysis["analysis"], ImageAnalysis)
    assert sim.count("replicate") == 2
