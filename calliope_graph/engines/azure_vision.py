"""Azure AI Vision engines: image analysis (Computer Vision v3.2 or Image Analysis 4.0) and OCR.

The model config chooses the API with the ``api_version`` parameter (``"3.2"`` or ``"4.0"``;
without it, a ``provider_model_name`` containing ``3.2`` means v3.2, anything else 4.0):

- v3.2: ``POST {endpoint}/vision/v3.2/analyze?visualFeatures=Description,Tags,Objects``, then
  (unless ``ocr: false``) ``POST {endpoint}/vision/v3.2/ocr`` for the text in the image;
- 4.0: one ``POST {endpoint}/computervision/imageanalysis:analyze?api-version=2023-10-01
  &features=caption,denseCaptions,tags,objects,read``, whose ``read`` result is the text.

``{endpoint}`` is ``ctx.keys.base_url("azure_vision")`` (``AZURE_VISION_ENDPOINT``), the key goes
in ``Ocp-Apim-Subscription-Key`` and the image is sent as raw bytes
(``application/octet-stream``). Before anything is sent the image is decoded and checked
against Azure's limits (v3.2: under 4 MB, at least 50x50 px; 4.0: up to 20 MB, 50 to 16000
px a side): a corrupt or out-of-range image is a :class:`MediaError` saying what to do, and
formats Azure does not take (WebP...) are converted to PNG first. Azure's own refusal of an
image (``InvalidImageFormat``, ``InvalidImageSize``) is a MediaError too; its error envelope
``{"error": {"code", "message", "innererror": {"code", "message"}}}`` is read for the most
specific code. Retries, Retry-After and redaction come from the shared request layer.
The request body is the image, so the ``extra_body`` parameter (a dict) is merged into the
query string of every call.

Results are read the way Calliope reads them: captions (capitalised), tags, objects and
text, with the seed's webcam-unfriendly tags (``selfie``, ``human face``, ``skin``...)
dropped unless ``ignore_tags`` says otherwise; the description strings them together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines._http import parse_json, request
from calliope_graph.engines._params import extra_body, form_fields, pick
from calliope_graph.engines._registry import Conversion, register
from calliope_graph.errors import (
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    MediaError,
    ProviderError,
    TransientProviderError,
)
from calliope_graph.media import Image, ImageAnalysis, ImageLimits, prepared

__all__ = [
    "CAPTION_REPLACEMENTS",
    "DEFAULT_FEATURES_V3",
    "DEFAULT_FEATURES_V4",
    "IGNORED_TAGS",
    "LIMITS",
    "REST_API_VERSION",
    "Reading",
    "api_version",
    "compose_description",
    "describe",
    "image_analysis",
    "interpret_v3",
    "interpret_v4",
    "ocr",
    "ocr_text_v3",
    "read_text_v4",
]

log = logging.getLogger("calliope_graph.engines.azure_vision")

PROVIDER = InferenceModelProvider.AZURE
_NAME = PROVIDER.value

V3 = "3.2"
V4 = "4.0"
#: The Image Analysis 4.0 ``api-version`` sent unless ``rest_api_version`` overrides it
#: (2023-10-01 is the GA version and the official SDK's default).
REST_API_VERSION = "2023-10-01"

#: v3.2 ``visualFeatures`` and 4.0 ``features`` each API knows (canonical spelling).
FEATURES_V3 = (
    "Categories",
    "Adult",
    "Tags",
    "Description",
    "Faces",
    "Color",
    "ImageType",
    "Objects",
    "Brands",
)
FEATURES_V4 = ("tags", "caption", "denseCaptions", "objects", "read", "smartCrops", "people")
DEFAULT_FEATURES_V3 = ("Description", "Tags", "Objects")
DEFAULT_FEATURES_V4 = ("caption", "denseCaptions", "tags", "objects", "read")
#: Where each requested feature's result lives in the answer.
_RESULT_KEY_V3 = {f: f[0].lower() + f[1:] for f in FEATURES_V3}
_RESULT_KEY_V4 = {f: f"{f}Result" for f in FEATURES_V4}

#: Tags and objects Calliope drops by default (webcam portraits are full of them).
IGNORED_TAGS = (
    "selfie",
    "human face",
    "jaw",
    "eyeball",
    "eyebrow",
    "forehead",
    "chin",
    "cheek",
    "clothing",
    "wearing",
    "wrinkle",
    "skin",
)
#: Caption rewrites Calliope applies by default (the camera is the storyteller's eye).
CAPTION_REPLACEMENTS = {"taking a selfie": "looking at me"}

#: Formats Azure Vision takes as they are; anything else is converted to PNG first.
_ACCEPTED_MIMES = frozenset(("image/jpeg", "image/png", "image/gif", "image/bmp"))
#: Azure's refusals of the image itself: a MediaError for the caller.
_IMAGE_CODES = frozenset(
    ("InvalidImageFormat", "InvalidImageSize", "InvalidImageDimension", "UnsupportedMediaType")
)


#: What each API version accepts [PROVIDERS.md §2.4]: v3.2 under 4 MB and at least 50x50;
#: 4.0 up to 20 MB and 50..16000 pixels a side. Larger images are scaled down / re-encoded
#: to fit (``media.prepared``); smaller ones are refused.
LIMITS = {
    V3: ImageLimits(
        "Azure Vision 3.2", formats=_ACCEPTED_MIMES, min_side=50, max_bytes=4 * 1024 * 1024
    ),
    V4: ImageLimits(
        "Azure Vision 4.0",
        formats=_ACCEPTED_MIMES,
        min_side=50,
        max_side=16000,
        max_bytes=20 * 1024 * 1024,
    ),
}


# -- configuration -------------------------------------------------------------------------
def api_version(config: ModelConfig) -> str:
    """``"3.2"`` or ``"4.0"``: the ``api_version`` parameter, else the model name's hint."""
    raw = config.parameters.get("api_version")
    if raw is None:
        return V3 if "3.2" in config.model.provider_model_name else V4
    text = str(raw).strip().lower().lstrip("v")
    if text in ("3.2", "3"):
        return V3
    if text in ("4.0", "4"):
        return V4
    raise ConfigurationError(
        f"Model config {config.slug!r} asks for Azure Vision api_version {raw!r}: use "
        '"3.2" (Computer Vision v3.2) or "4.0" (Image Analysis 4.0).'
    )


def _features(
    config: ModelConfig, key: str, known: tuple[str, ...], default: Iterable[str]
) -> list[str]:
    raw = config.parameters.get(key)
    if raw is None:
        return list(default)
    items = [str(x) for x in raw] if isinstance(raw, list | tuple) else str(raw).split(",")
    by_lower = {k.lower(): k for k in known}
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        canonical = by_lower.get(item.lower())
        if canonical is None:
            raise ConfigurationError(
                f"Model config {config.slug!r}: {item!r} is not an Azure Vision {key} value. "
                f"Use some of: {', '.join(known)}."
            )
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise ConfigurationError(
            f"Model config {config.slug!r}: {key} is empty; Azure Vision needs at least one of "
            f"{', '.join(known)}."
        )
    return out


def _flag(value: Any) -> str:
    if isinstance(value, str):
        return "true" if value.strip().lower() in ("1", "true", "yes", "on") else "false"
    return "true" if value else "false"


def _endpoint(ctx: RunContext) -> str:
    return ctx.keys.base_url(PROVIDER)


def _headers(ctx: RunContext) -> dict[str, str]:
    return {
        "Ocp-Apim-Subscription-Key": ctx.keys.require(PROVIDER),
        "Content-Type": "application/octet-stream",
        "Accept": "application/json",
    }


# -- the image -----------------------------------------------------------------------------
def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


async def _prepare(image: Image, version: str) -> bytes:
    """The bytes to send: checked to decode, converted to PNG when Azure would refuse the
    format, and fitted to the API version's limits, in a worker thread."""
    return (await prepared(image, LIMITS[version])).data


# -- errors --------------------------------------------------------------------------------
class _ImageRejected(InvalidRequestError):
    """Internal: Azure refused the image itself (re-raised as a MediaError)."""


_CODE_ADVICE = {
    "401": "check AZURE_VISION_KEY, and that AZURE_VISION_ENDPOINT is the endpoint of the "
    "resource that key belongs to",
    "404": "check AZURE_VISION_ENDPOINT (https://<resource>.cognitiveservices.azure.com) and "
    "that the resource's region offers this API version",
    "NotSupportedFeature": "caption and denseCaptions exist only in some Azure regions: "
    "remove them from 'features' or use a resource in a supported region",
    "UnsupportedFeature": "caption and denseCaptions exist only in some Azure regions: "
    "remove them from 'features' or use a resource in a supported region",
    "NotSupportedLanguage": "only tags can be produced in languages other than English: set "
    "'language' to en or request tags only",
}


def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from Azure's ``{"error": {"code", "message", "innererror"}}``.

    The inner code (``InvalidImageFormat``) is more specific than the outer one
    (``InvalidRequest``) and wins; both messages are kept when they differ. Also reads the
    gateway's bare ``{"statusCode", "message"}`` and the older top-level ``code``/``message``.
    """
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    if not isinstance(body, dict):
        return (str(body)[:300], None)
    error = body.get("error", body)
    if not isinstance(error, dict):
        return (str(error)[:300], None)
    message = str(error.get("message") or response.reason_phrase)
    code = error.get("code") or error.get("statusCode")
    inner = error.get("innererror")
    if isinstance(inner, dict):
        inner_message = inner.get("message")
        if inner_message and str(inner_message) not in message:
            message = f"{message} ({inner_message})"
        code = inner.get("code") or code
    code_text = None if code is None else str(code)
    advice = _CODE_ADVICE.get(code_text or "")
    if advice:
        message += f" — {advice}"
    return (message, code_text)


def _hook(response: httpx.Response, message: str, code: str | None) -> type[ProviderError] | None:
    if response.status_code in (400, 415) and code in _IMAGE_CODES:
        return _ImageRejected
    if response.status_code == 400 and code == "NotSupportedImage":
        return ContentPolicyError  # Azure's refusal of prohibited image content
    return None


async def _post(
    ctx: RunContext,
    config: ModelConfig,
    image: Image,
    version: str,
    path: str,
    params: dict[str, str],
    data: bytes,
    required: Iterable[str],
) -> dict[str, Any]:
    """POST the image to ``{endpoint}{path}`` and return the JSON object it answers.

    The body is the image itself, so ``extra_body`` is merged into the query parameters
    (each value as text). An answer that is not JSON, not an object, or lacks every
    ``required`` result is malformed: a TransientProviderError raised inside the retry loop,
    so it is asked again.
    """
    wanted = list(required)
    params = {**params, **form_fields(extra_body(config.parameters, config.slug))}
    log.debug("azure: POST %s %s", path, params)

    def parse(response: httpx.Response) -> dict[str, Any]:
        body = parse_json(response, _NAME)
        if not isinstance(body, dict):
            raise TransientProviderError(
                f"azure answered {path} with JSON that is not an object "
                f"({type(body).__name__}); it was retried.",
                provider=_NAME,
                status=response.status_code,
                code="malformed_body",
            )
        _require(body, wanted, path)
        return body

    try:
        return await request(
            ctx,
            _NAME,
            "POST",
            f"{_endpoint(ctx)}{path}",
            parse=parse,
            headers=_headers(ctx),
            content=data,
            params=params,
            describe=describe,
            hook=_hook,
        )
    except _ImageRejected as exc:
        limits = LIMITS[version]
        raise MediaError(
            f"{exc.message} — Azure Vision {version} refused {image.path!r}: send a JPEG, "
            f"PNG, GIF or BMP image of at least {limits.min_side}x{limits.min_side} pixels "
            f"and under {_megabytes(limits.max_bytes or 0)}.",
            path=image.path,
        ) from None


def _require(body: dict[str, Any], wanted: list[str], path: str) -> None:
    """A 200 answer lacking every requested result is malformed (retried)."""
    if wanted and not any(k in body for k in wanted):
        raise TransientProviderError(
            f"azure answered {path} without any of the requested results "
            f"({', '.join(wanted)}): the body is malformed. It was retried; try again later.",
            provider=_NAME,
            status=200,
            code="malformed_body",
        )


# -- reading answers -----------------------------------------------------------------------
def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _values(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    result = body.get(key)
    return _items(result.get("values")) if isinstance(result, dict) else []


def _confident(item: dict[str, Any], minimum: float) -> bool:
    confidence = item.get("confidence")
    return not isinstance(confidence, int | float) or confidence >= minimum


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        text = item.strip()
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out


@dataclass(frozen=True)
class Reading:
    """How answers are read: a confidence floor, ignored tags, caption rewrites.

    ``Reading.of(config)`` takes them from ``min_confidence``, ``ignore_tags`` and
    ``caption_replacements``; the defaults are Calliope's (IGNORED_TAGS,
    CAPTION_REPLACEMENTS).
    """

    min_confidence: float = 0.0
    ignore: frozenset[str] = frozenset(IGNORED_TAGS)
    replacements: tuple[tuple[str, str], ...] = tuple(CAPTION_REPLACEMENTS.items())

    @classmethod
    def of(cls, config: ModelConfig) -> Reading:
        params = config.parameters
        ignore = params.get("ignore_tags", IGNORED_TAGS)
        replacements = params.get("caption_replacements", CAPTION_REPLACEMENTS)
        return cls(
            min_confidence=float(params.get("min_confidence") or 0.0),
            ignore=frozenset(str(t).lower() for t in (ignore or ())),
            replacements=tuple((str(k), str(v)) for k, v in dict(replacements or {}).items()),
        )

    def caption(self, text: str) -> str:
        for old, new in self.replacements:
            text = text.replace(old, new)
        text = text.strip()
        return text[:1].upper() + text[1:]

    def keep(self, names: Iterable[str]) -> list[str]:
        return _dedupe(n for n in names if n.strip().lower() not in self.ignore)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def compose_description(captions: list[str], tags: list[str], objects: list[str], text: str) -> str:
    """One paragraph from the parts: the captions, what is in view, the text read."""
    parts = [_sentence(c) for c in captions]
    things = _dedupe([*tags, *objects])
    if things:
        parts.append(f"In view: {', '.join(things)}.")
    if text.strip():
        lines = " / ".join(line.strip() for line in text.splitlines() if line.strip())
        parts.append(f'Text in the image: "{lines}".')
    return " ".join(parts)


def _analysis(captions: list[str], tags: list[str], objects: list[str], text: str) -> ImageAnalysis:
    captions = _dedupe(captions)
    return ImageAnalysis(
        description=compose_description(captions, tags, objects, text),
        captions=captions,
        tags=tags,
        objects=objects,
        text=text,
        sources=[_NAME],
    )


def interpret_v3(
    body: dict[str, Any], *, text: str = "", reading: Reading | None = None
) -> ImageAnalysis:
    """An ImageAnalysis from a v3.2 ``/analyze`` answer (plus OCR ``text`` if read)."""
    reading = reading or Reading()
    description = body.get("description")
    description = description if isinstance(description, dict) else {}
    captions = [
        reading.caption(str(c["text"]))
        for c in _items(description.get("captions"))
        if c.get("text") and _confident(c, reading.min_confidence)
    ]
    tag_names = [
        str(t["name"])
        for t in _items(body.get("tags"))
        if t.get("name") and _confident(t, reading.min_confidence)
    ]
    extra = description.get("tags")
    if isinstance(extra, list):
        tag_names += [str(t) for t in extra if isinstance(t, str)]
    objects = [
        str(o["object"])
        for o in _items(body.get("objects"))
        if o.get("object") and _confident(o, reading.min_confidence)
    ]
    return _analysis(captions, reading.keep(tag_names), reading.keep(objects), text)


def read_text_v4(body: dict[str, Any]) -> str:
    """The lines of a 4.0 ``readResult`` (blocks of lines), one per line."""
    result = body.get("readResult")
    if not isinstance(result, dict):
        return ""
    lines = [
        str(line["text"])
        for block in _items(result.get("blocks"))
        for line in _items(block.get("lines"))
        if line.get("text")
    ]
    if not lines and isinstance(result.get("content"), str):
        return str(result["content"]).strip()  # the 2022/2023 preview shape
    return "\n".join(lines)


def interpret_v4(body: dict[str, Any], *, reading: Reading | None = None) -> ImageAnalysis:
    """An ImageAnalysis from an Image Analysis 4.0 answer (caption, dense captions, tags,
    objects, read). The older preview shapes (``descriptionResult``, flat object names,
    ``readResult.content``) are read too."""
    reading = reading or Reading()
    minimum = reading.min_confidence
    captions: list[str] = []
    caption = body.get("captionResult")
    if isinstance(caption, dict) and caption.get("text") and _confident(caption, minimum):
        captions.append(reading.caption(str(caption["text"])))
    for key in ("denseCaptionsResult", "descriptionResult"):
        captions += [
            reading.caption(str(v["text"]))
            for v in _values(body, key)
            if v.get("text") and _confident(v, minimum)
        ]
    tags = [
        str(t["name"])
        for t in _values(body, "tagsResult")
        if t.get("name") and _confident(t, minimum)
    ]
    objects: list[str] = []
    for value in _values(body, "objectsResult"):
        names = [t for t in _items(value.get("tags")) if t.get("name") and _confident(t, minimum)]
        if names:
            objects.append(str(names[0]["name"]))
        elif value.get("name"):
            objects.append(str(value["name"]))
    return _analysis(captions, reading.keep(tags), reading.keep(objects), read_text_v4(body))


def ocr_text_v3(body: dict[str, Any]) -> str:
    """The lines of a v3.2 ``/ocr`` answer (regions of lines of words), one per line."""
    lines: list[str] = []
    for region in _items(body.get("regions")):
        for line in _items(region.get("lines")):
            words = [str(w["text"]) for w in _items(line.get("words")) if w.get("text")]
            if words:
                lines.append(" ".join(words))
    return "\n".join(lines)


# -- requests ------------------------------------------------------------------------------
def _v4_params(config: ModelConfig, features: list[str]) -> dict[str, str]:
    params = config.parameters
    out = {
        "api-version": str(params.get("rest_api_version") or REST_API_VERSION),
        "features": ",".join(features),
        "language": str(params.get("language") or "en"),
    }
    if params.get("gender_neutral_caption") is not None:
        out["gender-neutral-caption"] = _flag(params["gender_neutral_caption"])
    return {**out, **_model_version(config)}


def _model_version(config: ModelConfig) -> dict[str, str]:
    """``model-version`` when the ``model_version`` parameter is set."""
    picked = pick(config.parameters, (), renames={"model_version": "model-version"})
    return form_fields({k: v for k, v in picked.items() if v})


async def _analyze_v4(
    ctx: RunContext, image: Image, config: ModelConfig, features: list[str], data: bytes
) -> dict[str, Any]:
    path = "/computervision/imageanalysis:analyze"
    required = [_RESULT_KEY_V4[f] for f in features]
    return await _post(ctx, config, image, V4, path, _v4_params(config, features), data, required)


async def _ocr_v3(ctx: RunContext, image: Image, config: ModelConfig, data: bytes) -> str:
    params = config.parameters
    path = "/vision/v3.2/ocr"
    query = {
        "language": str(params.get("ocr_language") or "unk"),
        "detectOrientation": _flag(params.get("detect_orientation", True)),
        **_model_version(config),
    }
    return ocr_text_v3(await _post(ctx, config, image, V3, path, query, data, ["regions"]))


@register(Conversion.IMAGE_ANALYSIS, PROVIDER)
async def image_analysis(ctx: RunContext, image: Image, config: ModelConfig) -> ImageAnalysis:
    """Describe ``image`` with Azure Vision (the API version the config names).

    Parameters: ``features`` (4.0; default caption, denseCaptions, tags, objects, read) or
    ``visual_features`` (v3.2; default Description, Tags, Objects), ``language``,
    ``model_version``, ``gender_neutral_caption`` (4.0), ``ocr`` (v3.2: also read the text
    with ``/ocr``, default true), ``min_confidence``, ``ignore_tags``,
    ``caption_replacements``, ``rest_api_version`` (4.0's ``api-version``).
    """
    version = api_version(config)
    reading = Reading.of(config)
    if version == V4:
        features = _features(config, "features", FEATURES_V4, DEFAULT_FEATURES_V4)
        data = await _prepare(image, version)
        body = await _analyze_v4(ctx, image, config, features, data)
        return interpret_v4(body, reading=reading)
    visual = _features(config, "visual_features", FEATURES_V3, DEFAULT_FEATURES_V3)
    data = await _prepare(image, version)
    params = config.parameters
    query = {
        "visualFeatures": ",".join(visual),
        "language": str(params.get("language") or "en"),
        **_model_version(config),
    }
    path = "/vision/v3.2/analyze"
    required = [_RESULT_KEY_V3[f] for f in visual]
    body = await _post(ctx, config, image, V3, path, query, data, required)
    text = await _ocr_v3(ctx, image, config, data) if params.get("ocr", True) else ""
    return interpret_v3(body, text=text, reading=reading)


async def ocr(ctx: RunContext, image: Image, config: ModelConfig) -> str:
    """The text in ``image``, one line per line read: v3.2 ``/ocr``, or 4.0's ``read``
    feature. An image without text gives an empty string."""
    version = api_version(config)
    data = await _prepare(image, version)
    if version == V4:
        return read_text_v4(await _analyze_v4(ctx, image, config, ["read"], data))
    return await _ocr_v3(ctx, image, config, data)
