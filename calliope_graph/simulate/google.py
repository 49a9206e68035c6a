"""A faithful offline fake of Google's Gemini API (``generativelanguage.googleapis.com``).

Paths (version ``v1beta``): ``POST models/{model}:generateContent`` and
``:streamGenerateContent`` (``?alt=sse``: ``data: <json>`` events, else a JSON array),
``:predict`` (Imagen), ``:predictLongRunning`` (Veo; an operation ``models/{model}/
operations/{id}`` read with ``GET``, ``done`` after ``sim.poll_steps`` polls, its video in
``response.generateVideoResponse.generatedSamples[].video.uri``), ``GET files/{id}:download``
(the MP4), ``GET models`` (paged with ``pageSize`` / ``pageToken``) and ``GET models/{model}``.

The key goes in ``x-goog-api-key`` (or the ``key`` query parameter). Every error uses
Google's envelope ``{"error": {"code", "message", "status", "details"}}``: no key is 403
``PERMISSION_DENIED``, a wrong one 400 ``INVALID_ARGUMENT`` with ``ErrorInfo`` reason
``API_KEY_INVALID``; a model that does not exist, is retired (past its shutdown date on the
simulator's wall clock) or does not serve the method is 404 ``NOT_FOUND``; quota is 429
``RESOURCE_EXHAUSTED`` with ``QuotaFailure`` and ``RetryInfo.retryDelay``; overload 503
``UNAVAILABLE``; bad bodies 400 ``INVALID_ARGUMENT`` in the words of Google's JSON parser.

Refusals are 200s, as Gemini reports them: a ``content_policy`` fault blocks the prompt of
text and speech models (``promptFeedback.blockReason: SAFETY``), withholds an image model's
answer (``finishReason: IMAGE_SAFETY``), filters Imagen (``raiFilteredReason``) and Veo
(``raiMediaFilteredCount`` / ``raiMediaFilteredReasons``). Answers carry ``usageMetadata``
with per-modality token counts. Images are real PNGs, speech real 24 kHz PCM as long as the
text takes to say, videos real H.264 MP4s starting on the prompt image.

Endpoint names for counting: ``generateContent``, ``streamGenerateContent``, ``countTokens``,
``predict``, ``predictLongRunning``, ``operations.get``, ``files.download``, ``models.list``,
``models.get``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
from PIL import UnidentifiedImageError

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import (
    analysis_answer,
    digest,
    image_bytes,
    json_for_schema,
    story_text,
)
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._speech import speech_pcm, speech_seconds
from calliope_graph.simulate._video import mp4_bytes, video_size

__all__ = ["FAKE", "HOST", "MODELS", "GoogleFake"]

HOST = "generativelanguage.googleapis.com"
_ORIGIN = f"https://{HOST}"
_VERSION = "v1beta"
_RATE_LIMITS = "https://ai.google.dev/gemini-api/docs/rate-limits"
_GENERATE = ("generateContent", "streamGenerateContent", "countTokens")


@dataclass(frozen=True)
class _Model:
    """A model the fake serves: its kind (what it answers), methods, token limits and the
    day Google shuts it down (None: none announced)."""

    kind: str  # text | image | speech | imagen | veo
    display: str
    methods: tuple[str, ...] = _GENERATE
    input_limit: int = 1_048_576
    output_limit: int = 65_536
    shutdown: date | None = None


#: The models served, as Google lists them (ai.google.dev/gemini-api/docs/models and
#: /deprecations, read 2026-12-06). Past ``shutdown`` (on ``sim.wall_clock``) a model is
#: refused with Google's 404, like one that never existed.
MODELS: dict[str, _Model] = {
    "gemini-3.8-flash": _Model("text", "Gemini 3.8 Flash"),
    "gemini-3.5-flash": _Model("text", "Gemini 3.5 Flash"),
    "gemini-3.5-flash-lite": _Model("text", "Gemini 3.5 Flash-Lite"),
    "gemini-3.1-flash-lite": _Model("text", "Gemini 3.1 Flash-Lite", shutdown=date(2027, 5, 7)),
    "gemini-3.1-pro-preview": _Model("text", "Gemini 3.1 Pro Preview"),
    "gemini-3.1-flash-image": _Model("image", "Gemini 3.1 Flash Image", output_limit=32_768),
    "gemini-3-pro-image": _Model("image", "Gemini 3 Pro Image", output_limit=32_768),
    "gemini-3.8-flash-tts": _Model(
        "speech", "Gemini 3.8 Flash TTS", input_limit=8_192, output_limit=16_384
    ),
    "gemini-3.1-flash-tts-preview": _Model(
        "speech", "Gemini 3.1 Flash TTS Preview", input_limit=8_192, output_limit=16_384
    ),
    "veo-3.1-generate-preview": _Model(
        "veo", "Veo 3.1", methods=("predictLongRunning",), input_limit=1_024, output_limit=1
    ),
    "veo-3.1-fast-generate-preview": _Model(
        "veo", "Veo 3.1 Fast", methods=("predictLongRunning",), input_limit=1_024, output_limit=1
    ),
    # Shut down (kept so the fake refuses them the way Google does, and serves them when the
    # simulator's clock is set before the date).
    "gemini-2.5-flash": _Model("text", "Gemini 2.5 Flash", shutdown=date(2026, 6, 17)),
    "gemini-2.5-pro": _Model("text", "Gemini 2.5 Pro", shutdown=date(2026, 6, 17)),
    "gemini-2.5-flash-image": _Model("image", "Nano Banana", shutdown=date(2026, 10, 2)),
    "imagen-4.0-generate-001": _Model(
        "imagen",
        "Imagen 4",
        methods=("predict",),
        input_limit=480,
        output_limit=8192,
        shutdown=date(2026, 8, 17),
    ),
    "imagen-4.0-fast-generate-001": _Model(
        "imagen",
        "Imagen 4 Fast",
        methods=("predict",),
        input_limit=480,
        output_limit=8192,
        shutdown=date(2026, 8, 17),
    ),
}
#: ``generationConfig`` fields the API knows (ai.google.dev/api/generate-content).
_GENERATION_FIELDS = frozenset(
    [
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "_responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "speechConfig",
        "thinkingConfig",
        "imageConfig",
        "mediaResolution",
    ]
)
_REQUEST_FIELDS = frozenset(
    [
        "model",
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
    ]
)
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_IMAGE_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
_IMAGEN_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}
_VOICES = frozenset(
    [
        "Zephyr",
        "Puck",
        "Charon",
        "Kore",
        "Fenrir",
        "Leda",
        "Orus",
        "Aoede",
        "Callirrhoe",
        "Autonoe",
        "Enceladus",
        "Iapetus",
        "Umbriel",
        "Algieba",
        "Despina",
        "Erinome",
        "Algenib",
        "Rasalgethi",
        "Laomedeia",
        "Achernar",
        "Alnilam",
        "Schedar",
        "Gacrux",
        "Pulcherrima",
        "Achird",
        "Zubenelgenubi",
        "Vindemiatrix",
        "Sadachbia",
        "Sadaltager",
        "Sulafat",
    ]
)
_SPEECH_RATE = 24_000
_SPEECH_MIME = f"audio/L16;codec=pcm;rate={_SPEECH_RATE}"
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: Both API versions are served (Google's SDK 3.x calls v1 by default; this engine v1beta).
_V = r"/v1(?:beta)?"
_PATH = re.compile(rf"{_V}/models/(?P<model>[^/:]+)(?::(?P<method>\w+))?")
_OPERATION = re.compile(rf"{_V}/models/(?P<model>[^/:]+)/operations/(?P<id>[\w-]+)")
_FILE = re.compile(rf"{_V}/files/(?P<id>[\w-]+)(?::download)?")
_MODELS = re.compile(rf"{_V}/models")


@dataclass
class _Operation:
    id: str
    model: str
    prompt: str
    image: bytes | None
    ratio: str
    seconds: int
    blocked: bool
    emptied: bool
    polls: int = 0
    uri: str = ""


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class GoogleFake(ProviderFake):
    """Google's Gemini API on ``generativelanguage.googleapis.com``."""

    name = "google"
    endpoints = (
        "generateContent",
        "streamGenerateContent",
        "countTokens",
        "predict",
        "predictLongRunning",
        "operations.get",
        "files.download",
        "models.list",
        "models.get",
    )
    hosts = (HOST,)

    auth = AuthCheck(
        credentials=(Credential("x-goog-api-key", query="key"),),
        missing=Failure(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established "
            "identity). Please use API Key or other form of API consumer identity to call "
            "this API.",
        ),
        invalid=Failure(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            extra={"reason": "API_KEY_INVALID"},
        ),
    )
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. "
            f"For more information on this error, head to: {_RATE_LIMITS}. Please retry in "
            "{retry_after}s.",
            extra={"retry_delay": "{retry_after}s"},
        ),
        server_error=Failure(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        ),
        unavailable=Failure(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        overloaded=Failure(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    )
    # Over a configured limit: the quota message naming the metric, limit and model, with
    # QuotaFailure and RetryInfo details. Gemini sends no rate-limit headers, not even
    # Retry-After (its SDKs read RetryInfo.retryDelay; see retry_after_header below).
    rate_limited = Failure(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For "
        f"more information on this error, head to: {_RATE_LIMITS}.\n* Quota exceeded for "
        "metric: generativelanguage.googleapis.com/generate_content_paid_tier_requests, "
        "limit: {limit}, model: {model}\nPlease retry in {retry_after}s.",
        extra={"retry_delay": "{retry_after}s", "quota_limit": "{limit}", "model": "{model}"},
    )
    retry_after_header = False
    # Operation polls and file downloads are not generation requests.
    limit_endpoints = (
        "generateContent",
        "streamGenerateContent",
        "predict",
        "predictLongRunning",
        "models.list",
        "models.get",
    )

    # -- routing --------------------------------------------------------------------------
    def endpoint(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/")
        if _OPERATION.fullmatch(path):
            return "operations.get"
        if _FILE.fullmatch(path):
            return "files.download"
        if _MODELS.fullmatch(path):
            return "models.list"
        match = _PATH.fullmatch(path)
        if match:
            return match.group("method") or "models.get"
        return path.strip("/").replace("/", ".") or "root"

    def model_of(self, request: httpx.Request) -> str | None:
        match = _PATH.fullmatch(request.url.path.rstrip("/")) or _OPERATION.fullmatch(
            request.url.path.rstrip("/")
        )
        return match.group("model") if match else None

    def tokens_of(self, request: httpx.Request) -> int:
        """Input tokens of a Gemini body, for ``tpm`` limits (Gemini counts input tokens
        per minute): its text parts / 4 and 258 per inline image, as ``usageMetadata``."""
        try:
            body = json.loads(request.content or b"{}")
        except (ValueError, UnicodeDecodeError):
            return 0
        contents = body.get("contents") if isinstance(body, dict) else None
        if not isinstance(contents, list):
            return 0
        texts, images = [], 0
        for content in contents:
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part, dict) and "inlineData" in part:
                    images += 1
        return _tokens("".join(texts)) + 258 * images

    def envelope(self, failure: Failure) -> httpx.Response:
        status = failure.code or _STATUS.get(failure.status, "UNKNOWN")
        details: list[dict[str, Any]] = []
        extra = dict(failure.extra)
        if "reason" in extra:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": extra["reason"],
                    "domain": "googleapis.com",
                    "metadata": {"service": HOST},
                }
            )
        if failure.status == 429:
            model = extra.get("model", "")
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": f"{HOST}/generate_content_paid_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": extra.get("quota_limit", ""),
                        }
                    ],
                }
            )
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS}
                    ],
                }
            )
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": extra.get("retry_delay", "1s"),
                }
            )
        error: dict[str, Any] = {
            "code": failure.status,
            "message": failure.message,
            "status": status,
        }
        if details:
            error["details"] = details
        return httpx.Response(
            failure.status,
            json={"error": error},
            headers={"content-type": "application/json; charset=UTF-8", **failure.headers},
        )

    def _error(self, status: int, message: str) -> Reject:
        return Reject(self.envelope(Failure(status, None, message)))

    def _bad(self, message: str) -> Reject:
        return self._error(400, message)

    # -- state ------------------------------------------------------------------------------
    def _state(self, key: str) -> dict[str, Any]:
        box: dict[str, Any] = self.sim.state(self.name).setdefault(key, {})
        return box

    def _seq(self) -> int:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    def _today(self) -> date:
        return datetime.fromtimestamp(self.sim.wall_clock(), UTC).date()

    def _served(self) -> dict[str, _Model]:
        today = self._today()
        return {k: m for k, m in MODELS.items() if m.shutdown is None or today < m.shutdown}

    def _model(self, name: str, method: str, version: str) -> _Model:
        model = self._served().get(name)
        if model is None or method not in model.methods:
            raise self._error(
                404,
                f"models/{name} is not found for API version {version}, or is not supported "
                f"for {method}. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        return model

    # -- requests ---------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        version = path.split("/")[1] if path.count("/") > 1 else _VERSION
        try:
            if _MODELS.fullmatch(path):
                return self._list(request)
            match = _OPERATION.fullmatch(path)
            if match:
                return self._operation(match.group("model"), match.group("id"))
            match = _FILE.fullmatch(path)
            if match and request.method == "GET":
                return self._file(match.group("id"))
            match = _PATH.fullmatch(path)
            if match:
                name, method = match.group("model"), match.group("method")
                if method is None:
                    return self._get_model(name, version)
                if request.method != "POST":
                    raise self._error(404, f"Method not found: {request.method} {path}")
                model = self._model(name, method, version)
                body = self._json(request)
                if method in ("generateContent", "streamGenerateContent"):
                    return self._generate(request, name, model, body, method)
                if method == "countTokens":
                    return self._count(body)
                if method == "predict":
                    return self._predict(request, name, body)
                if method == "predictLongRunning":
                    return self._predict_long(request, name, body)
                raise self._bad(f"The calliope simulator does not serve {method}.")
        except Reject as rejected:
            return rejected.response
        return self.envelope(Failure(404, "NOT_FOUND", f"Requested entity was not found: {path}"))

    def _json(self, request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            raise self._bad(
                "Invalid JSON payload received. Unexpected token.\n"
                + request.content[:40].decode("utf-8", "replace")
            ) from None
        if not isinstance(body, dict):
            raise self._bad("Invalid JSON payload received. Expected an object.")
        return body

    # models ---------------------------------------------------------------------------------
    def _model_entry(self, name: str, model: _Model) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": f"models/{name}",
            "version": "001" if name.endswith("-001") else name.rsplit("-", 1)[-1],
            "displayName": model.display,
            "description": f"{model.display} (simulated).",
            "inputTokenLimit": model.input_limit,
            "outputTokenLimit": model.output_limit,
            "supportedGenerationMethods": list(model.methods),
        }
        if model.kind in ("text", "image"):
            entry.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=True)
        return entry

    def _get_model(self, name: str, version: str) -> httpx.Response:
        model = self._served().get(name)
        if model is None:
            raise self._error(404, f"models/{name} is not found for API version {version}.")
        return httpx.Response(200, json=self._model_entry(name, model))

    def _list(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        try:
            size = int(params.get("pageSize", 50))
        except ValueError:
            raise self._bad("Invalid value at 'page_size' (TYPE_INT32)") from None
        size = max(1, min(size, 1000))
        names = sorted(self._served())
        token = params.get("pageToken")
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise self._bad("Invalid page token.") from None
        page = names[start : start + size]
        body: dict[str, Any] = {"models": [self._model_entry(n, MODELS[n]) for n in page]}
        if start + size < len(names):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return httpx.Response(200, json=body)

    # generateContent ----------------------------------------------------------------------
    def _check_request(self, body: dict[str, Any]) -> None:
        for key in body:
            if key not in _REQUEST_FIELDS:
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
                )
        gen = body.get("generationConfig") or {}
        if not isinstance(gen, dict):
            raise self._bad(
                "Invalid value at 'generation_config' (type.googleapis.com/"
                "google.ai.generativelanguage.v1beta.GenerationConfig)"
            )
        for key in gen:
            if key not in _GENERATION_FIELDS:
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'generation_config': Cannot find field."
                )
        temperature = gen.get("temperature")
        if temperature is not None and (
            not isinstance(temperature, int | float) or not 0 <= temperature <= 2
        ):
            raise self._bad(
                "* GenerateContentRequest.generation_config.temperature: "
                "temperature must be in the range [0.0, 2.0]"
            )
        if (gen.get("responseJsonSchema") or gen.get("responseSchema")) and gen.get(
            "responseMimeType"
        ) not in ("application/json", "text/x.enum"):
            raise self._bad(
                "* GenerateContentRequest.generation_config.response_mime_type: "
                "response_mime_type must be set to application/json or text/x.enum "
                "when a response schema is set."
            )
        if gen.get("responseJsonSchema") and gen.get("responseSchema"):
            raise self._bad("responseJsonSchema and responseSchema cannot both be set.")

    def _contents(self, body: dict[str, Any]) -> tuple[str, list[bytes], list[bytes]]:
        """(the last user turn's text, its images, its audio) after checking every part."""
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise self._bad("* GenerateContentRequest.contents: contents is not specified")
        system = body.get("systemInstruction")
        if system is not None:
            self._parts(
                system.get("parts") if isinstance(system, dict) else None, "system_instruction"
            )
        text, images, audio = "", [], []
        for i, content in enumerate(contents):
            if not isinstance(content, dict):
                raise self._bad(f"* GenerateContentRequest.contents[{i}]: must be an object")
            role = content.get("role", "user")
            if role not in ("user", "model", "function"):
                raise self._bad(
                    f"Please use a valid role: user, model. (contents[{i}].role is {role!r})"
                )
            t, im, au = self._parts(content.get("parts"), f"contents[{i}]")
            if role == "user":
                text, images, audio = t, im, au
        return text, images, audio

    def _parts(self, parts: Any, where: str) -> tuple[str, list[bytes], list[bytes]]:
        if not isinstance(parts, list) or not parts:
            raise self._bad(
                f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
            )
        texts, images, audio = [], [], []
        for j, part in enumerate(parts):
            data = [k for k in _PART_DATA if isinstance(part, dict) and k in part]
            if len(data) != 1:
                raise self._bad(
                    f"* GenerateContentRequest.{where}.parts[{j}].data: required "
                    "oneof field 'data' must have one initialized field"
                )
            if data[0] == "text":
                texts.append(str(part["text"]))
            elif data[0] == "inlineData":
                inline = part["inlineData"]
                mime = str(inline.get("mimeType", "")) if isinstance(inline, dict) else ""
                if not mime:
                    raise self._bad(
                        f"* GenerateContentRequest.{where}.parts[{j}].inline_data."
                        "mime_type: mime_type is required"
                    )
                try:
                    raw = base64.b64decode(str(inline.get("data", "")), validate=True)
                except (binascii.Error, ValueError):
                    raise self._bad(
                        f"Invalid value at '{where}.parts[{j}].inline_data.data' "
                        "(TYPE_BYTES), Base64 decoding failed"
                    ) from None
                if mime.startswith("image/"):
                    if not self._decodes(raw):
                        raise self._bad(
                            "Unable to process input image. Please retry or report "
                            "in https://developers.generativeai.google/guide/"
                            "troubleshooting"
                        )
                    images.append(raw)
                elif mime.startswith("audio/"):
                    audio.append(raw)
        return "\n".join(texts), images, audio

    @staticmethod
    def _decodes(data: bytes) -> bool:
        try:
            with pil_open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            return False
        return True

    def _usage(
        self,
        request: httpx.Request,
        prompt: str,
        images: list[bytes],
        out_tokens: int,
        out_modality: str,
    ) -> dict[str, Any]:
        text_tokens = _tokens(prompt) + max(0, len(request.content) // 400)
        prompt_details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if images:
            prompt_details.append({"modality": "IMAGE", "tokenCount": 258 * len(images)})
        prompt_tokens = text_tokens + 258 * len(images)
        return {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": prompt_tokens + out_tokens,
            "promptTokensDetails": prompt_details,
            "candidatesTokensDetails": [{"modality": out_modality, "tokenCount": out_tokens}],
        }

    def _generate(
        self, request: httpx.Request, name: str, model: _Model, body: dict[str, Any], method: str
    ) -> httpx.Response:
        self._check_request(body)
        prompt, images, audio = self._contents(body)
        gen: dict[str, Any] = body.get("generationConfig") or {}
        modalities = [str(m).upper() for m in gen.get("responseModalities") or []]
        if model.kind == "speech" and modalities != ["AUDIO"]:
            raise self._bad(
                "The requested combination of response modalities is not "
                "supported by the model: speech models answer AUDIO only "
                '(set responseModalities: ["AUDIO"]).'
            )
        if model.kind != "speech" and "AUDIO" in modalities:
            raise self._bad(
                "The requested combination of response modalities (AUDIO) is not "
                "supported by the model."
            )
        if model.kind == "text" and "IMAGE" in modalities:
            raise self._bad("Model does not support the requested response modalities: image")
        seq = self._seq()
        response_id = digest("google-response", str(self.sim.seed), str(seq))[:22]
        head: dict[str, Any] = {"modelVersion": name, "responseId": response_id}
        if self.sim.blocked(self, request, prompt) and model.kind != "image":
            answer = {
                "promptFeedback": {
                    "blockReason": "SAFETY",
                    "safetyRatings": [
                        {
                            "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                            "probability": "HIGH",
                            "blocked": True,
                        }
                    ],
                },
                "usageMetadata": self._usage(request, prompt, images, 0, "TEXT"),
                **head,
            }
            return self._answer(answer, [], method, request)
        finish = "STOP"
        parts: list[dict[str, Any]]
        out_modality = "TEXT"
        if self.sim.blocked(self, request, prompt):
            parts, finish, out_modality = [], "IMAGE_SAFETY", "IMAGE"
        elif self.sim.emptied(self, request, prompt):
            parts = []
        elif model.kind == "speech":
            seconds = speech_seconds(prompt)
            pcm = speech_pcm(prompt, seconds, _SPEECH_RATE)
            self._voice(gen)  # an unknown voice is refused
            parts = [
                {
                    "inlineData": {
                        "mimeType": _SPEECH_MIME,
                        "data": base64.b64encode(pcm).decode("ascii"),
                    }
                }
            ]
            out_modality = "AUDIO"
        elif model.kind == "image":
            width, height = self._image_size(gen)
            drawn = image_bytes(prompt, *self.sim.drawn_size(width, height))
            parts = [
                {
                    "inlineData": {
                        "mimeType": "image/png",
                        "data": base64.b64encode(drawn).decode("ascii"),
                    }
                }
            ]
            out_modality = "IMAGE"
        else:
            text = self._text(prompt, images, audio, gen, name)
            limit = gen.get("maxOutputTokens")
            if isinstance(limit, int) and limit > 0 and _tokens(text) > limit:
                text, finish = text[: limit * 4], "MAX_TOKENS"
            parts = [{"text": text}]
        out_tokens = (
            1290
            if out_modality == "IMAGE" and parts
            else _tokens(json.dumps(parts))
            if parts
            else 0
        )
        candidate: dict[str, Any] = {
            "content": {"parts": parts, "role": "model"},
            "finishReason": finish,
            "index": 0,
        }
        answer = {
            "candidates": [candidate],
            "usageMetadata": self._usage(request, prompt, images, out_tokens, out_modality),
            **head,
        }
        return self._answer(answer, parts, method, request)

    def _count(self, body: dict[str, Any]) -> httpx.Response:
        """``countTokens`` of ``contents`` (or of a whole ``generateContentRequest``)."""
        inner = body.get("generateContentRequest")
        request_body = inner if isinstance(inner, dict) else body
        self._contents({"contents": request_body.get("contents")})
        text = json.dumps(request_body.get("contents"))
        tokens = _tokens(text)
        return httpx.Response(
            200,
            json={
                "totalTokens": tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
            },
        )

    def _voice(self, gen: dict[str, Any]) -> str:
        speech = gen.get("speechConfig") or {}
        voice = ((speech.get("voiceConfig") or {}).get("prebuiltVoiceConfig") or {}).get(
            "voiceName"
        )
        if voice is not None and voice not in _VOICES:
            raise self._bad(
                f"Voice name {voice} is not supported. Allowed voice names are: "
                + ", ".join(sorted(v.lower() for v in _VOICES))
            )
        return str(voice or "Kore")

    def _image_size(self, gen: dict[str, Any]) -> tuple[int, int]:
        image_config = gen.get("imageConfig") or {}
        ratio = str(image_config.get("aspectRatio") or "1:1")
        if ratio not in _IMAGE_RATIOS:
            raise self._bad(
                f"Unsupported aspect ratio: {ratio}. Supported: " + ", ".join(sorted(_IMAGE_RATIOS))
            )
        w, h = (int(v) for v in ratio.split(":"))
        scale = 1024 / max(w, h)
        return max(16, round(w * scale)) & ~1, max(16, round(h * scale)) & ~1

    def _text(
        self, prompt: str, images: list[bytes], audio: list[bytes], gen: dict[str, Any], name: str
    ) -> str:
        schema = (
            gen.get("responseJsonSchema")
            or gen.get("_responseJsonSchema")
            or gen.get("responseSchema")
        )
        seed = digest(prompt, name, *images, *audio)
        if isinstance(schema, dict):
            return json.dumps(json_for_schema(schema, seed))
        if images and gen.get("responseMimeType") == "application/json":
            return json.dumps(analysis_answer(images[-1]))
        if audio:
            # What was "said" depends on the audio bytes only (as the Whisper fake does).
            return story_text(
                "lantern garden harbour meadow window", sentences=1, model=digest(audio[-1])
            )
        if gen.get("responseMimeType") == "application/json":
            return json.dumps({"text": story_text(prompt, model=name)})
        return story_text(prompt, model=name)

    def _answer(
        self,
        answer: dict[str, Any],
        parts: list[dict[str, Any]],
        method: str,
        request: httpx.Request,
    ) -> httpx.Response:
        if method == "generateContent":
            return httpx.Response(200, json=answer)
        chunks = self._chunks(answer, parts)
        if request.url.params.get("alt") == "sse":
            # Google's SSE framing: one `data: <json>` line per chunk, CRLF-separated.
            data = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks).encode()
            return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=chunks)

    @staticmethod
    def _chunks(answer: dict[str, Any], parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answer as stream chunks: text in a few pieces, the finish reason and the
        usage on the last."""
        text = parts[0].get("text") if len(parts) == 1 else None
        candidates = answer.get("candidates")
        if not isinstance(text, str) or not candidates:
            return [answer]
        words = text.split(" ")
        step = max(1, len(words) // 4)
        pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
        pieces = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
        head = {k: v for k, v in answer.items() if k not in ("candidates", "usageMetadata")}
        usage = answer["usageMetadata"]
        chunks = []
        for i, piece in enumerate(pieces):
            candidate: dict[str, Any] = {
                "content": {"parts": [{"text": piece}], "role": "model"},
                "index": 0,
            }
            chunk: dict[str, Any] = {"candidates": [candidate], **head}
            if i == len(pieces) - 1:
                candidate["finishReason"] = candidates[0].get("finishReason", "STOP")
                chunk["usageMetadata"] = usage
            else:
                chunk["usageMetadata"] = {
                    "promptTokenCount": usage["promptTokenCount"],
                    "totalTokenCount": usage["promptTokenCount"],
                    "promptTokensDetails": usage["promptTokensDetails"],
                }
            chunks.append(chunk)
        return chunks

    # Imagen -------------------------------------------------------------------------------
    def _instance(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        instances = body.get("instances")
        for key in body:
            if key not in ("instances", "parameters"):
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
                )
        if (
            not isinstance(instances, list)
            or len(instances) != 1
            or not isinstance(instances[0], dict)
        ):
            raise self._bad("* PredictRequest.instances: exactly one instance is required.")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise self._bad(
                "Invalid value at 'parameters' (type.googleapis.com/"
                "google.protobuf.Value), expected an object"
            )
        return instances[0], parameters

    def _predict(self, request: httpx.Request, name: str, body: dict[str, Any]) -> httpx.Response:
        instance, parameters = self._instance(body)
        prompt = instance.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise self._bad("Prompt is required: instances[0].prompt is empty.")
        ratio = str(parameters.get("aspectRatio") or "1:1")
        if ratio not in _IMAGEN_RATIOS:
            raise self._bad(f"Unsupported aspect ratio: {ratio}")
        count = parameters.get("sampleCount", 4)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise self._bad("sampleCount must be an integer from 1 to 4.")
        if self.sim.blocked(self, request, prompt):
            reason = (
                "Unable to show generated images. All images were filtered out because "
                "they violated Vertex AI's usage guidelines. You will not be charged "
                "for blocked images. Try rephrasing the prompt. Support codes: 39322892"
            )
            predictions = (
                [{"raiFilteredReason": reason}] if parameters.get("includeRaiReason") else []
            )
            return httpx.Response(200, json={"predictions": predictions} if predictions else {})
        if self.sim.emptied(self, request, prompt):
            return httpx.Response(200, json={})
        w, h = (int(v) for v in ratio.split(":"))
        scale = 1024 / max(w, h)
        size = self.sim.drawn_size(round(w * scale), round(h * scale))
        predictions = [
            {
                "mimeType": "image/png",
                "bytesBase64Encoded": base64.b64encode(image_bytes(f"{prompt}|{i}", *size)).decode(
                    "ascii"
                ),
            }
            for i in range(count)
        ]
        return httpx.Response(200, json={"predictions": predictions})

    # Veo ------------------------------------------------------------------------------------
    def _predict_long(
        self, request: httpx.Request, name: str, body: dict[str, Any]
    ) -> httpx.Response:
        instance, parameters = self._instance(body)
        prompt = instance.get("prompt")
        image = instance.get("image")
        if prompt is not None and not isinstance(prompt, str):
            raise self._bad("Invalid value at 'instances[0].prompt', expected a string.")
        if not prompt and image is None:
            raise self._bad("A prompt or an image is required.")
        raw: bytes | None = None
        if image is not None:
            if not isinstance(image, dict) or not image.get("bytesBase64Encoded"):
                raise self._bad("instances[0].image: bytesBase64Encoded and mimeType are required.")
            if image.get("mimeType") not in ("image/png", "image/jpeg", "image/webp"):
                raise self._bad(f"Unsupported image mime type: {image.get('mimeType')}")
            try:
                raw = base64.b64decode(str(image["bytesBase64Encoded"]), validate=True)
            except (binascii.Error, ValueError):
                raise self._bad(
                    "instances[0].image.bytesBase64Encoded: Base64 decoding failed"
                ) from None
            if not self._decodes(raw):
                raise self._bad("Unable to process input image.")
        ratio = str(parameters.get("aspectRatio") or "16:9")
        if ratio not in ("16:9", "9:16"):
            raise self._bad(f"Aspect ratio {ratio} is not supported; use 16:9 or 9:16.")
        seconds = parameters.get("durationSeconds", 8)
        if seconds not in (4, 6, 8):
            raise self._bad(f"durationSeconds {seconds} is out of range: 4, 6 or 8 seconds.")
        for key in parameters:
            if key not in (
                "aspectRatio",
                "durationSeconds",
                "resolution",
                "personGeneration",
                "negativePrompt",
                "seed",
                "numberOfVideos",
                "generateAudio",
            ):
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'parameters': Cannot find field."
                )
        text = prompt or ""
        op_id = digest("google-operation", str(self.sim.seed), str(self._seq()))[:12]
        self._state("operations")[op_id] = _Operation(
            id=op_id,
            model=name,
            prompt=text,
            image=raw,
            ratio=ratio,
            seconds=int(seconds),
            blocked=self.sim.blocked(self, request, text),
            emptied=self.sim.emptied(self, request, text),
        )
        return httpx.Response(200, json={"name": f"models/{name}/operations/{op_id}"})

    def _operation(self, model: str, op_id: str) -> httpx.Response:
        operation: _Operation | None = self._state("operations").get(op_id)
        if operation is None or operation.model != model:
            raise self._error(404, f"Operation models/{model}/operations/{op_id} not found.")
        operation.polls += 1
        name = f"models/{model}/operations/{op_id}"
        if operation.polls < max(int(self.sim.poll_steps), 1):
            return httpx.Response(200, json={"name": name})
        result: dict[str, Any]
        if operation.blocked:
            result = {
                "raiMediaFilteredCount": 1,
                "raiMediaFilteredReasons": [
                    "Your prompt could not be submitted: it may violate our policies. Try "
                    "rephrasing it. Support codes: 29310472"
                ],
            }
        elif operation.emptied:
            result = {}
        else:
            if not operation.uri:
                operation.uri = self._render(operation)
            result = {"generatedSamples": [{"video": {"uri": operation.uri}}]}
        return httpx.Response(
            200,
            json={
                "name": name,
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                    "PredictLongRunningResponse",
                    "generateVideoResponse": result,
                },
            },
        )

    def _render(self, operation: _Operation) -> str:
        w, h = (16, 9) if operation.ratio == "16:9" else (9, 16)
        width, height = video_size(w * 10, h * 10)
        video = mp4_bytes(
            f"{operation.prompt}|{operation.id}",
            width=width,
            height=height,
            seconds=operation.seconds,
            image=operation.image,
        )
        file_id = digest(video)[:12]
        self._state("files")[file_id] = video
        return f"{_ORIGIN}/{_VERSION}/files/{file_id}:download?alt=media"

    def _file(self, file_id: str) -> httpx.Response:
        video = self._state("files").get(file_id)
        if video is None:
            raise self._error(404, f"File files/{file_id} not found.")
        return httpx.Response(
            200,
            content=video,
            headers={"content-type": "video/mp4", "content-length": str(len(video))},
        )


FAKE = GoogleFake
