"""A faithful offline fake of the Hugging Face Inference API (PROVIDERS.md §5).

Served on ``router.huggingface.co`` under ``/hf-inference/models/{model_id}`` and on the
legacy ``api-inference.huggingface.co`` under ``/models/{model_id}``, with Bearer auth
(401 ``{"error": "Invalid credentials in Authorization header"}``). Each model has a task,
as on the Hub, and the body is read the way that task reads it:

- ``text-generation``: JSON ``{"inputs", "parameters"}`` → ``[{"generated_text"}]``, with
  TGI's 422 validation errors (``error_type: validation``);
- ``text-to-image``: JSON → raw image bytes (JPEG, or PNG when ``Accept: image/png``);
- ``image-to-text``: raw image bytes → ``[{"generated_text"}]``;
- ``automatic-speech-recognition``: raw WAV/MP3 bytes (or JSON with base64 ``inputs``)
  → ``{"text"}``.

Cold models: ``sim.state("hugging_face")["cold"] = {model_id: K}`` makes the next K calls
to that model answer 503 ``{"error": "Model … is currently loading", "estimated_time"}``
(``estimated_time`` from ``state["estimated_time"]``, 20 s by default); a request with
``X-Wait-For-Model: true`` instead waits (on ``sim.sleep``) until the model is warm.
``state["models"]`` maps extra model ids to tasks. A content_policy fault is a 400 whose
message names the safety checker (HF documents no content-policy status: **unconfirmed**).

Endpoint names for counting are the task names above.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import Any

import httpx
from PIL import UnidentifiedImageError

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import describe_image, digest, image_bytes, story_text
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._video import is_mp3, is_wav

__all__ = ["FAKE", "MODEL_TASKS", "HuggingFaceFake"]

TEXT_GENERATION = "text-generation"
TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_TEXT = "image-to-text"
ASR = "automatic-speech-recognition"

#: Models the fake knows, with their Hub task (others are guessed from the name).
MODEL_TASKS: dict[str, str] = {
    "mistralai/Mistral-7B-Instruct-v0.3": TEXT_GENERATION,
    "HuggingFaceH4/zephyr-7b-beta": TEXT_GENERATION,
    "meta-llama/Llama-3.1-8B-Instruct": TEXT_GENERATION,
    "gpt2": TEXT_GENERATION,
    "openai-community/gpt2": TEXT_GENERATION,
    "stabilityai/stable-diffusion-xl-base-1.0": TEXT_TO_IMAGE,
    "black-forest-labs/FLUX.1-schnell": TEXT_TO_IMAGE,
    "runwayml/stable-diffusion-v1-5": TEXT_TO_IMAGE,
    "Salesforce/blip-image-captioning-large": IMAGE_TO_TEXT,
    "Salesforce/blip-image-captioning-base": IMAGE_TO_TEXT,
    "nlpconnect/vit-gpt2-image-captioning": IMAGE_TO_TEXT,
    "openai/whisper-large-v3": ASR,
    "openai/whisper-large-v3-turbo": ASR,
    "facebook/wav2vec2-base-960h": ASR,
}
_GUESSES = (
    (re.compile(r"whisper|wav2vec|hubert|speech|asr", re.I), ASR),
    (re.compile(r"blip|caption|vit-gpt2|pix2struct|llava|git-base|git-large", re.I), IMAGE_TO_TEXT),
    (re.compile(r"diffusion|sdxl|flux|kandinsky|dall-?e|text-to-image", re.I), TEXT_TO_IMAGE),
    (
        re.compile(r"gpt|llama|mistral|mixtral|qwen|gemma|phi-|falcon|zephyr|instruct|chat", re.I),
        TEXT_GENERATION,
    ),
)
_ROUTES = (
    ("router.huggingface.co", "/hf-inference/models/"),
    ("api-inference.huggingface.co", "/models/"),
)
_ASR_MALFORMED = (
    "Soundfile is either not in the correct format or is malformed. Ensure that the soundfile "
    "has a valid audio file extension (e.g. wav, flac or mp3) and is not corrupted. If reading "
    "from a remote URL, ensure that the URL is the full address to **download** the audio file."
)
_RATE_LIMIT = (
    "Rate limit reached. You reached free usage limit (reset hourly). Please subscribe to a "
    "plan at https://huggingface.co/pricing to use the API at this rate"
)


class HuggingFaceFake(ProviderFake):
    """The Hugging Face Inference API (hf-inference provider and the legacy host)."""

    name = "hugging_face"
    endpoints = (TEXT_GENERATION, TEXT_TO_IMAGE, IMAGE_TO_TEXT, ASR, "models")
    hosts = ("router.huggingface.co", "api-inference.huggingface.co")

    # -- routing ---------------------------------------------------------------------------
    def _model_id(self, request: httpx.Request) -> str | None:
        path = request.url.path
        for host, prefix in _ROUTES:
            if request.url.host == host and path.startswith(prefix):
                model = path[len(prefix) :].strip("/")
                return model or None
        return None

    def task_of(self, model: str) -> str | None:
        """The task a model serves: configured, known, or guessed from its name."""
        extra: dict[str, str] = self.sim.state(self.name).setdefault("models", {})
        if model in extra:
            return extra[model]
        if model in MODEL_TASKS:
            return MODEL_TASKS[model]
        for pattern, task in _GUESSES:
            if pattern.search(model):
                return task
        return None

    def endpoint(self, request: httpx.Request) -> str:
        model = self._model_id(request)
        if model is None:
            return request.url.path.strip("/").replace("/", ".") or "root"
        return self.task_of(model) or "models"

    # -- wire ------------------------------------------------------------------------------
    def _headers(self, model: str | None = None) -> dict[str, str]:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        headers = {"x-request-id": digest("hf", str(self.sim.seed), str(state["seq"]))[:20]}
        if model:
            headers["x-compute-type"] = "cpu+optimized"
        return headers

    def _fail(
        self,
        status: int,
        error: str | list[str],
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"error": error, **(extra or {})}
        all_headers = self._headers()
        all_headers.update(headers or {})
        return httpx.Response(status, json=body, headers=all_headers)

    auth = AuthCheck(
        credentials=(Credential("authorization", schemes=("bearer",)),),
        missing=Failure(401, None, "Invalid credentials in Authorization header"),
        invalid=Failure(401, None, "Invalid credentials in Authorization header"),
    )
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            None,
            _RATE_LIMIT,
            headers={
                "ratelimit": '"api";r=0;t={retry_after}',
                "ratelimit-policy": '"fixed window";"api";q=500;w=300',
            },
        ),
        server_error=Failure(500, None, "Internal Server Error"),
        unavailable=Failure(503, None, "Service Unavailable"),
        overloaded=Failure(503, None, "Model is overloaded, please try again later"),
    )
    retry_after = "60"
    # Over a configured limit: 429 with the IETF draft headers its SDK reads, reflecting the
    # configured window.
    rate_limited = Failure(
        429,
        None,
        _RATE_LIMIT,
        headers={
            "ratelimit": '"api";r=0;t={retry_after}',
            "ratelimit-policy": '"fixed window";"api";q={limit};w={window_seconds}',
        },
    )

    def envelope(self, failure: Failure) -> httpx.Response:
        return self._fail(failure.status, failure.message, headers=dict(failure.headers))

    # -- requests --------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        model = self._model_id(request)
        if model is None:
            return self._fail(404, "Not Found")
        if request.method != "POST":
            return self._fail(405, "Method Not Allowed")
        task = self.task_of(model)
        if task is None:
            return self._fail(404, f"Model {model} does not exist")
        loading = await self._loading(request, model)
        if loading is not None:
            return loading
        handlers = {
            TEXT_GENERATION: self._text_generation,
            TEXT_TO_IMAGE: self._text_to_image,
            IMAGE_TO_TEXT: self._image_to_text,
            ASR: self._speech,
        }
        try:
            return handlers[task](request, model)
        except Reject as rejected:
            return rejected.response

    async def _loading(self, request: httpx.Request, model: str) -> httpx.Response | None:
        state = self.sim.state(self.name)
        cold: dict[str, int] = state.setdefault("cold", {})
        remaining = int(cold.get(model, 0))
        if remaining <= 0:
            return None
        estimate = float(state.get("estimated_time", 20.0))
        if request.headers.get("x-wait-for-model", "").lower() in ("true", "1"):
            timeout = request.extensions.get("timeout", {})
            read = timeout.get("read") if isinstance(timeout, dict) else None
            if read is not None and float(read) < estimate:
                await self.sim.sleep(float(read))
                raise httpx.ReadTimeout("model still loading (simulated)", request=request)
            await self.sim.sleep(estimate)
            cold[model] = 0
            return None
        cold[model] = remaining - 1
        return self._fail(
            503, f"Model {model} is currently loading", extra={"estimated_time": estimate}
        )

    def _json(self, request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            raise Reject(
                self._fail(
                    400,
                    "Failed to parse the request body as JSON: expected value at line 1 column 1",
                )
            ) from None
        if not isinstance(body, dict):
            raise Reject(
                self._fail(
                    422,
                    "Failed to deserialize the JSON body into the target type: invalid type: "
                    "expected struct at line 1 column 1",
                    extra={"error_type": "validation"},
                )
            )
        return body

    def _blocked(self, request: httpx.Request, text: str | None) -> None:
        if self.sim.blocked(self, request, text):
            raise Reject(
                self._fail(
                    400,
                    "Potential NSFW content was detected by the safety checker in the input "
                    "or output; try again with a different prompt.",
                )
            )

    def _validation(self, message: str) -> Reject:
        return Reject(
            self._fail(
                422, f"Input validation error: {message}", extra={"error_type": "validation"}
            )
        )

    # text-generation ---------------------------------------------------------------------
    def _text_generation(self, request: httpx.Request, model: str) -> httpx.Response:
        body = self._json(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            raise Reject(
                self._fail(
                    422,
                    "Failed to deserialize the JSON body into the target type: missing field "
                    "`inputs` at line 1 column 2"
                    if inputs is None
                    else "Failed to deserialize the JSON body into the target type: inputs: "
                    "invalid type: expected a string",
                    extra={"error_type": "validation"},
                )
            )
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise self._validation("`parameters` must be an object")
        if not inputs.strip():
            raise self._validation("`inputs` cannot be empty")
        temperature = params.get("temperature")
        if temperature is not None and (
            not isinstance(temperature, int | float) or temperature <= 0
        ):
            raise self._validation("`temperature` must be strictly positive")
        top_p = params.get("top_p")
        if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p < 1):
            raise self._validation("`top_p` must be > 0.0 and < 1.0")
        max_new = params.get("max_new_tokens", 100)
        if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new <= 0:
            raise self._validation("`max_new_tokens` must be strictly positive")
        self._blocked(request, inputs)
        text = " " + story_text(inputs, model=model)
        text = text[: max_new * 4]
        if params.get("return_full_text", True):
            text = inputs + text
        return httpx.Response(200, json=[{"generated_text": text}], headers=self._headers(model))

    # text-to-image -----------------------------------------------------------------------
    def _text_to_image(self, request: httpx.Request, model: str) -> httpx.Response:
        body = self._json(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, str) or not inputs.strip():
            raise Reject(self._fail(400, "`inputs` must be a non-empty prompt string"))
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise Reject(self._fail(400, "`parameters` must be an object"))
        default = 1024 if re.search(r"xl|flux", model, re.I) else 512
        width, height = params.get("width", default), params.get("height", default)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise Reject(self._fail(400, "`width` and `height` must be integers"))
        if width % 8 or height % 8:
            raise Reject(
                self._fail(
                    400,
                    f"`height` and `width` have to be divisible by 8 but are {height} and {width}.",
                )
            )
        if not (64 <= width <= 2048 and 64 <= height <= 2048):
            raise Reject(
                self._fail(
                    400, f"`width` and `height` must be between 64 and 2048, got {width}x{height}"
                )
            )
        self._blocked(request, inputs)
        accept = request.headers.get("accept", "")
        fmt, mime = ("PNG", "image/png") if "image/png" in accept else ("JPEG", "image/jpeg")
        seed = params.get("seed")
        drawn = inputs if seed is None else f"{inputs} #{seed}"
        raw = image_bytes(drawn, *self.sim.drawn_size(width, height), fmt)
        headers = self._headers(model)
        headers["content-type"] = mime
        return httpx.Response(200, content=raw, headers=headers)

    # raw-bytes tasks -----------------------------------------------------------------------
    def _payload(self, request: httpx.Request) -> tuple[bytes, dict[str, Any]]:
        """Raw body bytes, or the base64 ``inputs`` of a JSON body, with its parameters."""
        if request.headers.get("content-type", "").startswith("application/json"):
            body = self._json(request)
            inputs = body.get("inputs")
            if not isinstance(inputs, str):
                raise Reject(self._fail(400, "`inputs` must be a base64-encoded string"))
            try:
                data = base64.b64decode(inputs, validate=True)
            except (binascii.Error, ValueError):
                raise Reject(self._fail(400, "`inputs` is not valid base64")) from None
            params = body.get("parameters") or {}
            return data, params if isinstance(params, dict) else {}
        return request.content, {}

    def _image_to_text(self, request: httpx.Request, model: str) -> httpx.Response:
        data, _ = self._payload(request)
        try:
            with pil_open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise Reject(
                self._fail(400, "cannot identify image file <_io.BytesIO object at 0x7f3a2c1d0b80>")
            ) from None
        self._blocked(request, None)
        caption = describe_image(data)["caption"]
        return httpx.Response(200, json=[{"generated_text": caption}], headers=self._headers(model))

    def _speech(self, request: httpx.Request, model: str) -> httpx.Response:
        data, params = self._payload(request)
        if not (is_wav(data) or is_mp3(data)):
            raise Reject(self._fail(400, _ASR_MALFORMED))
        self._blocked(request, None)
        text = story_text("", sentences=1, model=f"{model}|{digest(data)}")
        out: dict[str, Any] = {"text": text}
        if params.get("return_timestamps"):
            words = text.split()
            out["chunks"] = [
                {"text": w, "timestamp": [round(i * 0.4, 2), round(i * 0.4 + 0.4, 2)]}
                for i, w in enumerate(words)
            ]
        return httpx.Response(200, json=out, headers=self._headers(model))


FAKE = HuggingFaceFake
