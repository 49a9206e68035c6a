"""The fal apps the fake serves (what each accepts: sizes, durations, input types), fal's
error vocabulary (request errors, platform error types, validation issues), and the checks of
a request's inputs (:class:`FalInputChecks`, which :class:`~.fal.FalFake` extends)."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import UnidentifiedImageError

from calliope_graph.media import pil_open
from calliope_graph.simulate._core import (
    ProviderFake,
)

__all__ = ["APPS", "RATIOS", "FalInputChecks"]

QUEUE = "https://queue.fal.run"
CDN = "https://v3.fal.media"
_ERRORS_DOC = "https://docs.fal.ai/errors"
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_NO_DOWNLOAD = "Failed to download the file. Please check if the URL is accessible."
#: FLUX's ``image_size`` presets (fal's FLUX model pages).
_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
#: Request errors (docs.fal.ai/documentation/model-apis/request-errors): type → status.
_REQUEST_ERRORS = {
    "request_timeout": (504, "Request timed out"),
    "startup_timeout": (504, "Runner did not start in time"),
    "runner_scheduling_failure": (503, "No runner could be allocated to handle the request"),
    "runner_disconnected": (503, "Runner disconnected unexpectedly"),
    "runner_server_error": (500, "Runner encountered an internal server error"),
    "internal_error": (500, "Internal server error"),
}
#: The Platform APIs' error ``type`` for a status (the spec's enum).
_PLATFORM_TYPES = {
    400: "validation_error",
    401: "authorization_error",
    403: "authorization_error",
    404: "not_found",
    422: "validation_error",
    429: "rate_limited",
}


def _platform_error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    kind = _PLATFORM_TYPES.get(status, "server_error")
    body = {"error": {"type": kind, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


@dataclass(frozen=True)
class _App:
    kind: str  # "image" or "video"
    steps: tuple[int, int, int] = (1, 12, 4)  # min, max, default inference steps
    durations: tuple[str, ...] = ()
    default_duration: str = "5"
    resolutions: tuple[str, ...] = ()
    #: An image app's required input image field (``image_url`` or the list ``image_urls``),
    #: None for text to image.
    images: str | None = None
    #: How an image app is asked for a size: ``image_size`` (FLUX), ``aspect_ratio``
    #: (Kontext) or ``input`` (the output takes the input image's size).
    size: str = "image_size"


_KLING = _App("video", durations=("5", "10"))
_SEEDANCE = _App(
    "video",
    durations=tuple(str(n) for n in range(2, 13)),
    resolutions=("480p", "720p", "1080p"),
)
#: Image-to-image and edit apps (their fal.ai API pages, cited in engines/_fal_io.py).
_KONTEXT = _App("image", images="image_url", size="aspect_ratio")
_KONTEXT_MULTI = _App("image", images="image_urls", size="aspect_ratio")
#: Kontext's ``aspect_ratio`` values, as (width, height).
RATIOS = {
    r: (int(r.split(":")[0]), int(r.split(":")[1]))
    for r in ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
}
#: The apps the fake serves, by their id (``owner/alias/path``).
APPS: dict[str, _App] = {
    "fal-ai/flux/schnell": _App("image"),
    "fal-ai/flux/dev": _App("image", steps=(1, 50, 28)),
    "fal-ai/flux/dev/image-to-image": _App(
        "image", steps=(10, 50, 40), images="image_url", size="input"
    ),
    "fal-ai/flux-pro/kontext": _KONTEXT,
    "fal-ai/flux-pro/kontext/max": _KONTEXT,
    "fal-ai/flux-pro/kontext/multi": _KONTEXT_MULTI,
    "fal-ai/flux-pro/kontext/max/multi": _KONTEXT_MULTI,
    "fal-ai/kling-video/v2.1/standard/image-to-video": _KLING,
    "fal-ai/kling-video/v2.1/pro/image-to-video": _KLING,
    "fal-ai/kling-video/v2.5-turbo/standard/image-to-video": _KLING,
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": _KLING,
    "fal-ai/bytedance/seedance/v1/lite/image-to-video": _SEEDANCE,
    "fal-ai/bytedance/seedance/v1/pro/image-to-video": _SEEDANCE,
}


@dataclass
class _Request:
    id: str
    app: str
    queue: str
    inputs: dict[str, Any]
    steps: int
    polls: int = 0
    started: bool = False
    #: The status poll at which it left the queue.
    started_poll: int | None = None
    done: bool = False
    cancelled: bool = False
    #: (status, body) of the result when the model failed.
    error: tuple[int, dict[str, Any]] | None = None
    output: dict[str, Any] | None = None
    seq: int = 0
    flagged: bool = False
    empty: bool = False


def _issue(loc: list[Any], msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    return {
        "loc": ["body", *loc],
        "msg": msg,
        "type": kind,
        "url": f"{_ERRORS_DOC}#{kind}",
        "input": value,
    }


def _first_type(body: dict[str, Any]) -> str | None:
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        kind = detail[0].get("type")
        return str(kind) if kind else None
    return None


class FalInputChecks(ProviderFake):
    """The checks of a request's inputs against its app (fal's 422 validation issues), and
    the images a request names."""

    def _validate(self, app: _App, body: dict[str, Any]) -> list[dict[str, Any]]:
        issues: list[dict[str, Any]] = []
        prompt = body.get("prompt")
        if prompt is None:
            issues.append(_issue(["prompt"], "Field required", "missing"))
        elif not isinstance(prompt, str):
            issues.append(_issue(["prompt"], "Input should be a valid string", "string_type"))
        if app.kind == "image":
            self._check_image_inputs(app, body, issues)
        else:
            self._check_video_inputs(app, body, issues)
        return issues

    def _check_image_inputs(self, app: _App, body: dict[str, Any], issues: list[Any]) -> None:
        if app.images is not None:
            self._check_input_images(app.images, body, issues)
        if app.size == "image_size":
            self._check_image_size(body, issues)
        ratio = body.get("aspect_ratio")
        if app.size == "aspect_ratio" and ratio is not None and ratio not in RATIOS:
            names = ", ".join(f"'{r}'" for r in RATIOS)
            issues.append(_issue(["aspect_ratio"], f"Input should be {names}", "enum", ratio))
        strength = body.get("strength", 0.95)
        if app.size == "input" and (
            not isinstance(strength, int | float) or not 0.01 <= strength <= 1
        ):
            message = "Input should be between 0.01 and 1"
            issues.append(_issue(["strength"], message, "less_than_equal", strength))
        low, high, _ = app.steps
        steps = body.get("num_inference_steps")
        if steps is not None and (not isinstance(steps, int) or not low <= steps <= high):
            issues.append(
                _issue(
                    ["num_inference_steps"],
                    f"Input should be between {low} and {high}",
                    "less_than_equal",
                    steps,
                )
            )
        count = body.get("num_images", 1)
        if not isinstance(count, int) or not 1 <= count <= 4:
            issues.append(
                _issue(["num_images"], "Input should be between 1 and 4", "less_than_equal", count)
            )
        fmt = body.get("output_format", "jpeg")
        if fmt not in ("jpeg", "png"):
            issues.append(_issue(["output_format"], "Input should be 'jpeg' or 'png'", "enum", fmt))

    @staticmethod
    def _check_image_size(body: dict[str, Any], issues: list[Any]) -> None:
        size = body.get("image_size", "landscape_4_3")
        if isinstance(size, str):
            if size not in _SIZES:
                names = ", ".join(f"'{s}'" for s in _SIZES)
                issues.append(_issue(["image_size"], f"Input should be {names}", "enum", size))
        elif isinstance(size, dict):
            for key in ("width", "height"):
                value = size.get(key)
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 14142:
                    issues.append(
                        _issue(
                            ["image_size", key],
                            "Input should be an integer from 1 to 14142",
                            "int_type",
                            value,
                        )
                    )
        else:
            issues.append(_issue(["image_size"], "Input should be a preset or an object", "enum"))

    def _check_input_images(self, field: str, body: dict[str, Any], issues: list[Any]) -> None:
        """An edit app's input image(s): required, each a data URI or a URL the simulator
        serves that decodes as an image (fal downloads it: ``file_download_error`` if not)."""
        value = body.get(field)
        if value is None:
            issues.append(_issue([field], "Field required", "missing"))
            return
        many = field.endswith("_urls")
        if many and (not isinstance(value, list) or not value):
            issues.append(_issue([field], "List should have at least 1 item", "too_short", value))
            return
        for index, url in enumerate(value if many else [value]):
            if self._image(url) is None:
                loc = [field, index] if many else [field]
                shown = url[:60] if isinstance(url, str) else url
                issues.append(_issue(loc, _NO_DOWNLOAD, "file_download_error", shown))

    def _check_video_inputs(self, app: _App, body: dict[str, Any], issues: list[Any]) -> None:
        url = body.get("image_url")
        if url is None:
            issues.append(_issue(["image_url"], "Field required", "missing"))
        elif self._image(url) is None:
            issues.append(
                {
                    **_issue(
                        ["image_url"],
                        "Failed to download the file. Please check if the URL is accessible.",
                        "file_download_error",
                        url[:60] if isinstance(url, str) else url,
                    )
                }
            )
        duration = body.get("duration", app.default_duration)
        if duration not in app.durations:
            choices = ", ".join(f"'{d}'" for d in app.durations)
            issues.append(_issue(["duration"], f"Input should be {choices}", "enum", duration))
        resolution = body.get("resolution")
        if app.resolutions and resolution is not None and resolution not in app.resolutions:
            choices = ", ".join(f"'{r}'" for r in app.resolutions)
            issues.append(_issue(["resolution"], f"Input should be {choices}", "enum", resolution))

    def _image(self, url: Any) -> bytes | None:
        """The bytes of an input image (a data URI, or a URL the simulator serves)."""
        if not isinstance(url, str):
            return None
        if url.startswith("data:"):
            match = re.fullmatch(r"data:([\w/+.-]+);base64,(.*)", url, re.DOTALL)
            if match is None or match.group(1).lower() not in _IMAGE_TYPES:
                return None
            try:
                data = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                return None
        else:
            served: dict[str, httpx.Response] = self.sim.state("download")
            response = served.get(url)
            if response is None or response.status_code >= 400:
                return None
            data = response.content
        try:
            with pil_open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            return None
        return data
