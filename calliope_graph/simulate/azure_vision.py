"""A faithful offline fake of Azure AI Vision (PROVIDERS.md §2).

Served on any ``*.cognitiveservices.azure.com`` or regional ``*.api.cognitive.microsoft.com``
host, like a real resource endpoint:

- ``POST /vision/v3.2/analyze?visualFeatures=…`` (Computer Vision v3.2), endpoint name
  ``analyze.v3.2``;
- ``POST /vision/v3.2/ocr?language=unk&detectOrientation=true``, ``ocr.v3.2``;
- ``POST /computervision/imageanalysis:analyze?api-version=2023-10-01&features=…`` (Image
  Analysis 4.0; ``2024-02-01`` is accepted too), ``analyze.4.0``.

The key is read from ``Ocp-Apim-Subscription-Key`` (or the ``subscription-key`` query
parameter); a missing or wrong one gets the gateway's 401 ``{"error": {"code": "401",
"message": "Access denied …"}}``. The image comes as raw bytes (``application/octet-stream``)
or as ``{"url": …}`` JSON (only URLs the simulator serves can be fetched). It is decoded and
checked the way each API version does — formats, bytes, pixels — and refused in Azure's
envelope ``{"error": {"code": "InvalidRequest", "message", "innererror": {"code":
"InvalidImageFormat" | "InvalidImageSize" | …, "message"}}}`` (4.0 adds the
``x-ms-error-code`` header). Answers are derived from the image's pixels
(:func:`~calliope_graph.simulate._content.describe_image`), so a run is reproducible.

A content_policy fault becomes v3.2/4.0's ``NotSupportedImage`` refusal (Vision does not
otherwise judge content); the other faults map to 429 with Retry-After, 500
``InternalServerError`` and 503 ``ServiceUnavailable`` (Azure has no 529).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from calliope_graph.simulate._azure_shapes import (
    V3_MODEL,
    V4_MODEL,
    _crop,
    _first_part,
    _model_version,
    _Numbers,
    _ratios,
    _read_blocks,
)
from calliope_graph.simulate._content import describe_image, digest, image_probe
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)

__all__ = ["FAKE", "AzureVisionFake"]

V3_ANALYZE = "/vision/v3.2/analyze"
V3_OCR = "/vision/v3.2/ocr"
V4_ANALYZE = "/computervision/imageanalysis:analyze"
_ENDPOINTS = {V3_ANALYZE: "analyze.v3.2", V3_OCR: "ocr.v3.2", V4_ANALYZE: "analyze.4.0"}

#: Image Analysis 4.0 ``api-version`` values the fake serves.
API_VERSIONS = ("2023-10-01", "2024-02-01")

_V3_FEATURES = {
    f.lower(): f
    for f in (
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
}
_V4_FEATURES = {
    f.lower(): f
    for f in ("tags", "caption", "denseCaptions", "objects", "read", "smartCrops", "people")
}
_V3_LANGUAGES = ("en", "es", "ja", "pt", "zh")
_OCR_LANGUAGES = ("unk", "en", "de", "es", "fr", "it", "ja", "ko", "nl", "pt", "ru", "zh-Hans")
_V3_FORMATS = {"JPEG": "Jpeg", "PNG": "Png", "GIF": "Gif", "BMP": "Bmp"}
_V4_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF")
_V3_MAX_BYTES = 4 * 1024 * 1024
_V4_MAX_BYTES = 20 * 1024 * 1024

_DENIED_INVALID = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)
_DENIED_MISSING = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)

_UNAVAILABLE = Failure(
    503,
    "ServiceUnavailable",
    "The service is temporarily unable to process your request. Please try again later.",
)


class AzureVisionFake(ProviderFake):
    """Computer Vision v3.2 (analyze, OCR) and Image Analysis 4.0 on a resource endpoint."""

    name = "azure_vision"
    endpoints = ("analyze.v3.2", "ocr.v3.2", "analyze.4.0")
    hosts = (".cognitiveservices.azure.com", ".api.cognitive.microsoft.com")

    # -- plumbing -------------------------------------------------------------------------
    def _route(self, request: httpx.Request) -> str:
        return request.url.path.rstrip("/").lower()

    def endpoint(self, request: httpx.Request) -> str:
        route = self._route(request)
        return _ENDPOINTS.get(route) or route.strip("/").replace("/", ".") or "root"

    def _seq(self) -> int:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    def _request_id(self, seq: int) -> str:
        h = digest("azure-request", str(self.sim.seed), str(seq))
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def _headers(self, seq: int) -> dict[str, str]:
        return {
            "apim-request-id": self._request_id(seq),
            "content-type": "application/json; charset=utf-8",
            "x-envoy-upstream-service-time": "212",
            "strict-transport-security": "max-age=31536000; includeSubDomains; preload",
            "x-content-type-options": "nosniff",
        }

    def _fail(
        self,
        status: int,
        code: str,
        message: str,
        *,
        inner: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        v4: bool = False,
    ) -> httpx.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if inner is not None:
            error["innererror"] = {"code": inner[0], "message": inner[1]}
        all_headers = self._headers(self._seq())
        if v4:
            all_headers["x-ms-error-code"] = code
        all_headers.update(headers or {})
        return httpx.Response(status, json={"error": error}, headers=all_headers)

    def _bad(self, v4: bool, inner_code: str, inner_message: str, message: str = "") -> Reject:
        """A 400 ``InvalidRequest`` with a specific inner code, in the version's wording."""
        outer = message if v4 and message else inner_message
        return Reject(
            self._fail(400, "InvalidRequest", outer, inner=(inner_code, inner_message), v4=v4)
        )

    def _ok(self, body: dict[str, Any], seq: int) -> httpx.Response:
        headers = self._headers(seq)
        headers["csp-billing-usage"] = "CognitiveServices.ComputerVision.Transaction=1"
        return httpx.Response(200, json=body, headers=headers)

    # -- ProviderFake ---------------------------------------------------------------------
    auth = AuthCheck(
        credentials=(Credential("ocp-apim-subscription-key", query="subscription-key"),),
        missing=Failure(401, "401", _DENIED_MISSING),
        invalid=Failure(401, "401", _DENIED_INVALID),
    )
    # Azure has no 529: an overloaded service answers 503.
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            "429",
            "Requests to the Analyze Image Operation under Computer Vision API have "
            "exceeded rate limit of your current ComputerVision F0 pricing tier. Please "
            "retry after {retry_after} seconds. To increase your default rate limit, go to the "
            "Azure portal and upgrade the pricing tier of the resource.",
        ),
        server_error=Failure(
            500,
            "InternalServerError",
            "An internal server error occurred.",
            extra={"inner": ("InternalServerError", "An internal server error occurred.")},
        ),
        unavailable=_UNAVAILABLE,
        overloaded=_UNAVAILABLE,
    )

    # Over a configured limit: the same 429 with ``Retry-After`` (the core adds it) and the
    # wait in the message.
    rate_limited = errors.rate_limit

    def envelope(self, failure: Failure) -> httpx.Response:
        inner = failure.extra.get("inner")
        return self._fail(
            failure.status,
            failure.code or str(failure.status),
            failure.message,
            inner=inner,
            headers=dict(failure.headers),
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        route = self._route(request)
        if request.method != "POST" or route not in _ENDPOINTS:
            return self._fail(404, "404", "Resource not found")
        v4 = route == V4_ANALYZE
        try:
            if v4:
                return await self._analyze_v4(request)
            if route == V3_OCR:
                return await self._ocr_v3(request)
            return await self._analyze_v3(request)
        except Reject as rejected:
            return rejected.response

    # -- reading the request --------------------------------------------------------------
    async def _image(self, request: httpx.Request, v4: bool) -> tuple[bytes, str, int, int]:
        """(bytes, format, width, height) of the request's image, or Azure's refusal."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            data = await self._fetch(request, v4)
        elif kind == "application/octet-stream" or (kind == "multipart/form-data" and not v4):
            data = request.content
            if kind == "multipart/form-data":
                data = _first_part(request)
        else:
            raise Reject(
                self._fail(
                    415,
                    "InvalidRequest",
                    "Unsupported media type.",
                    inner=("UnsupportedMediaType", f"Content-Type '{kind}' is not supported."),
                    v4=v4,
                )
            )
        limit = _V4_MAX_BYTES if v4 else _V3_MAX_BYTES
        if not data or len(data) > limit:
            if v4:
                raise self._bad(
                    v4,
                    "InvalidImageSize",
                    f"The image size is not allowed to be zero or larger than {limit} bytes.",
                    "Image size is not valid.",
                )
            raise self._bad(v4, "InvalidImageSize", "Input image is too large.")
        probe = image_probe(data)
        if probe is None:
            raise self._bad(
                v4,
                "InvalidImageFormat",
                "Input data is not a valid image.",
                "Image format is not valid.",
            )
        fmt, width, height = probe
        if (v4 and fmt not in _V4_FORMATS) or (not v4 and fmt not in _V3_FORMATS):
            raise self._bad(
                v4,
                "InvalidImageFormat",
                "Input data is not a valid image.",
                "Image format is not valid.",
            )
        if v4 and not (min(width, height) >= 50 and max(width, height) <= 16000):
            raise self._bad(
                v4,
                "InvalidImageSize",
                "The image dimension is not allowed to be smaller than 50 and larger than 16000.",
                "Image size is not valid.",
            )
        if not v4 and min(width, height) < 50:
            raise self._bad(v4, "InvalidImageSize", "Image size is too small.")
        return data, fmt, width, height

    async def _fetch(self, request: httpx.Request, v4: bool) -> bytes:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            body = None
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise self._bad(v4, "InvalidImageUrl", "Image URL is badly formatted.")
        try:
            # Offline: only URLs the simulator itself serves (sim.serve_download) resolve.
            served = await self.sim.handle(httpx.Request("GET", url))
        except (httpx.HTTPError, ValueError):
            served = None
        if served is None or served.status_code != 200:
            raise self._bad(v4, "InvalidImageUrl", "Image URL is not accessible.")
        return await served.aread()

    def _blocked(self, request: httpx.Request, v4: bool) -> None:
        if self.sim.blocked(self, request, None):
            raise self._bad(
                v4, "NotSupportedImage", "The image is not supported.", "Image is not supported."
            )

    # -- v3.2 -----------------------------------------------------------------------------
    async def _analyze_v3(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        raw = params.get("visualFeatures", "")
        features: list[str] = []
        for name in filter(None, (f.strip() for f in raw.split(","))):
            feature = _V3_FEATURES.get(name.lower())
            if feature is None:
                raise self._bad(
                    False, "NotSupportedVisualFeature", "Specified feature type is not valid."
                )
            features.append(feature)
        features = features or ["Categories"]  # the documented default
        for detail in filter(None, (d.strip() for d in params.get("details", "").split(","))):
            if detail.lower() not in ("celebrities", "landmarks"):
                raise self._bad(False, "InvalidDetails", f"Unsupported detail '{detail}'.")
        language = params.get("language", "en")
        if language not in _V3_LANGUAGES:
            raise self._bad(
                False,
                "NotSupportedLanguage",
                "The requested operation is not supported in the language specified.",
            )
        _model_version(self, params, v4=False)
        data, fmt, width, height = await self._image(request, v4=False)
        self._blocked(request, v4=False)
        seq = self._seq()
        info = describe_image(data)
        rng = _Numbers(data)
        body: dict[str, Any] = {}
        if "Categories" in features:
            place = "outdoor_" if "outdoor" in info["tags"] else "indoor_"
            body["categories"] = [{"name": place, "score": rng.confidence(0.4, 0.9)}]
        if "Adult" in features:
            body["adult"] = {
                "isAdultContent": False,
                "isRacyContent": False,
                "isGoryContent": False,
                "adultScore": rng.confidence(0.001, 0.02),
                "racyScore": rng.confidence(0.001, 0.03),
                "goreScore": rng.confidence(0.001, 0.01),
            }
        if "Tags" in features:
            body["tags"] = [{"name": t, "confidence": rng.confidence()} for t in info["tags"]]
        if "Description" in features:
            body["description"] = {
                "tags": list(info["tags"]),
                "captions": [{"text": info["caption"], "confidence": rng.confidence(0.4, 0.8)}],
            }
        if "Faces" in features:
            body["faces"] = []
        if "Color" in features:
            colour = str(info["tags"][0]).capitalize()
            body["color"] = {
                "dominantColorForeground": colour,
                "dominantColorBackground": colour,
                "dominantColors": [colour],
                "accentColor": digest("accent", data[:4096])[:6].upper(),
                "isBwImg": colour in ("Black", "White", "Grey"),
                "isBWImg": colour in ("Black", "White", "Grey"),
            }
        if "ImageType" in features:
            body["imageType"] = {"clipArtType": 0, "lineDrawingType": 0}
        if "Objects" in features:
            body["objects"] = [
                {
                    "rectangle": rng.box(width, height, keys=("x", "y", "w", "h")),
                    "object": name,
                    "confidence": rng.confidence(0.5, 0.9),
                }
                for name in info["objects"]
            ]
        if "Brands" in features:
            body["brands"] = []
        body["requestId"] = self._request_id(seq)
        body["metadata"] = {"height": height, "width": width, "format": _V3_FORMATS[fmt]}
        body["modelVersion"] = V3_MODEL
        return self._ok(body, seq)

    async def _ocr_v3(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        language = params.get("language", "unk")
        if language not in _OCR_LANGUAGES:
            raise self._bad(
                False,
                "NotSupportedLanguage",
                "The requested operation is not supported in the language specified.",
            )
        orientation = params.get("detectOrientation", "true").lower()
        if orientation not in ("true", "false"):
            raise self._bad(False, "BadArgument", "Invalid argument: detectOrientation.")
        _model_version(self, params, v4=False)
        data, _, width, height = await self._image(request, v4=False)
        self._blocked(request, v4=False)
        seq = self._seq()
        info = describe_image(data)
        rng = _Numbers(data)
        words = str(info.get("text", "")).split()
        x, y = rng.point(width, height)
        word_boxes = []
        cursor = x
        for word in words:
            w = max(8, 9 * len(word))
            word_boxes.append({"boundingBox": f"{cursor},{y},{w},14", "text": word})
            cursor += w + 6
        line_box = f"{x},{y},{max(cursor - x - 6, 1)},14"
        regions = (
            [{"boundingBox": line_box, "lines": [{"boundingBox": line_box, "words": word_boxes}]}]
            if words
            else []
        )
        body: dict[str, Any] = {
            "language": "en" if language == "unk" else language,
            "modelVersion": V3_MODEL,
            "regions": regions,
        }
        if orientation == "true":
            body["textAngle"] = 0.0
            body["orientation"] = "Up"
        return self._ok(body, seq)

    # -- 4.0 ------------------------------------------------------------------------------
    async def _analyze_v4(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        version = params.get("api-version")
        if version not in API_VERSIONS:
            # The gateway routes on api-version: an unknown one finds no operation.
            return self._fail(404, "404", "Resource not found")
        raw = params.get("features", "")
        features: list[str] = []
        for name in filter(None, (f.strip() for f in raw.split(","))):
            feature = _V4_FEATURES.get(name.lower())
            if feature is None:
                raise self._bad(
                    True,
                    "InvalidArgument",
                    f"Invalid visual feature '{name}'. Supported values are: "
                    f"{', '.join(_V4_FEATURES.values())}.",
                    "Invalid argument.",
                )
            if feature not in features:
                features.append(feature)
        if not features:
            raise self._bad(
                True,
                "InvalidArgument",
                "At least one visual feature must be specified in the 'features' parameter.",
                "Invalid argument.",
            )
        language = params.get("language", "en")
        if language != "en" and {"caption", "denseCaptions"} & set(features):
            raise self._bad(
                True,
                "NotSupportedLanguage",
                "Caption and DenseCaptions are only supported in English ('en').",
                "The requested operation is not supported in the language specified.",
            )
        neutral = params.get("gender-neutral-caption", "false").lower()
        if neutral not in ("true", "false"):
            raise self._bad(
                True,
                "InvalidArgument",
                "gender-neutral-caption must be true or false.",
                "Invalid argument.",
            )
        ratios = _ratios(self, params.get("smartcrops-aspect-ratios"))
        _model_version(self, params, v4=True)
        data, _, width, height = await self._image(request, v4=True)
        self._blocked(request, v4=True)
        seq = self._seq()
        info = describe_image(data)
        rng = _Numbers(data)
        caption = str(info["caption"])
        if neutral == "true":
            caption = re.sub(r"\b(man|woman)\b", "person", caption)
        whole = {"x": 0, "y": 0, "w": width, "h": height}
        object_boxes = [(name, rng.box(width, height)) for name in info["objects"]]
        body: dict[str, Any] = {"modelVersion": V4_MODEL}
        if "caption" in features:
            body["captionResult"] = {"text": caption, "confidence": rng.confidence(0.6, 0.9)}
        if "denseCaptions" in features:
            values = [
                {"text": caption, "confidence": rng.confidence(0.6, 0.9), "boundingBox": whole}
            ]
            values += [
                {
                    "text": f"a close-up of a {name}",
                    "confidence": rng.confidence(0.5, 0.85),
                    "boundingBox": box,
                }
                for name, box in object_boxes
            ]
            body["denseCaptionsResult"] = {"values": values[:10]}
        body["metadata"] = {"width": width, "height": height}
        if "tags" in features:
            body["tagsResult"] = {
                "values": [{"name": t, "confidence": rng.confidence()} for t in info["tags"]]
            }
        if "objects" in features:
            body["objectsResult"] = {
                "values": [
                    {
                        "boundingBox": box,
                        "tags": [{"name": name, "confidence": rng.confidence(0.5, 0.9)}],
                    }
                    for name, box in object_boxes
                ]
            }
        if "read" in features:
            body["readResult"] = {
                "blocks": _read_blocks(str(info.get("text", "")), rng, width, height)
            }
        if "smartCrops" in features:
            body["smartCropsResult"] = {
                "values": [
                    {"aspectRatio": ratio, "boundingBox": _crop(ratio, width, height)}
                    for ratio in ratios or [round(width / height, 2)]
                ]
            }
        if "people" in features:
            body["peopleResult"] = {"values": []}
        return self._ok(body, seq)


FAKE = AzureVisionFake
