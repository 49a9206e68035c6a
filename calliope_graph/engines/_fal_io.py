"""fal media in and out: where a fal app takes reference images (``text_to_image``'s
``reference_images`` port), and reading the files an app answers.

**Reference images.** fal's image-to-image and edit apps take their input images as model
input fields, each a URL or a data URI (docs.fal.ai/documentation/model-apis/fal-cdn, "Data
URIs"; the images go as data URIs, like the video engine's start image, within
``IMAGE_LIMITS``). Which field, and how the output's size is asked for, is per app — from
each app's input schema on its fal.ai page:

* ``fal-ai/flux/dev/image-to-image``: ``image_url`` (one image, required) and ``strength``;
  the output takes the input image's size, no ``image_size``
  (fal.ai/models/fal-ai/flux/dev/image-to-image/api);
* ``fal-ai/flux-pro/kontext`` and ``fal-ai/flux-pro/kontext/max``: ``image_url`` (one
  image) and ``aspect_ratio`` (21:9 ... 9:21) (fal.ai/models/fal-ai/flux-pro/kontext/api,
  fal.ai/docs/model-api-reference/image-generation-api/flux-pro-kontext-max);
* ``fal-ai/flux-pro/kontext/multi`` and ``fal-ai/flux-pro/kontext/max/multi``:
  ``image_urls`` (a list, at least one) and ``aspect_ratio``
  (fal.ai/docs/model-api-reference/image-generation-api/flux-pro-kontext-multi).

Any other fal app that takes images is reached with the ``reference_field`` model parameter
(e.g. ``image_urls``; a field named ``*_urls`` gets every reference, any other the first).
A one-image field given several references sends the first and logs that the rest were
left out (as Stability's image-to-image does); a ``*/multi`` app takes them all.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calliope_graph.errors import ConfigurationError, EmptyOutputError, MediaError
from calliope_graph.media import Image, ImageLimits, prepared

__all__ = [
    "IMAGE_LIMITS",
    "KONTEXT_RATIOS",
    "REFERENCE_APPS",
    "ReferenceInput",
    "data_uri_bytes",
    "file_url",
    "no_image_input",
    "reference_input",
    "reference_inputs",
]

log = logging.getLogger("calliope_graph.engines.fal")

#: An input image (a video's start frame, a reference image) as a data URI. fal names no
#: limit for data URIs; 10 MB is our own cap (fal's CDN is recommended for larger files),
#: and Kling works far below 4096 pixels.
IMAGE_LIMITS = ImageLimits(
    "fal",
    formats=frozenset(("image/jpeg", "image/png", "image/webp")),
    max_side=4096,
    max_bytes=10 * 1024 * 1024,
    measure="data_url",
)
#: Kontext's ``aspect_ratio`` values (its fal.ai API pages).
KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")


@dataclass(frozen=True)
class ReferenceInput:
    """Where a fal app takes reference images, and how it is asked for a size."""

    field: str
    #: ``"aspect_ratio"`` (Kontext: the nearest of ``KONTEXT_RATIOS``) or None (the output
    #: follows the input image: the asked size is not sent).
    size: str | None = None

    @property
    def many(self) -> bool:
        """Whether the field is a list of images (``image_urls``) rather than one."""
        return self.field.endswith("_urls")


_ONE, _MANY = (
    ReferenceInput("image_url", "aspect_ratio"),
    ReferenceInput("image_urls", "aspect_ratio"),
)
#: The fal apps known to take images, by endpoint id (see the module docstring).
REFERENCE_APPS: dict[str, ReferenceInput] = {
    "fal-ai/flux/dev/image-to-image": ReferenceInput("image_url"),
    "fal-ai/flux-pro/kontext": _ONE,
    "fal-ai/flux-pro/kontext/max": _ONE,
    "fal-ai/flux-pro/kontext/multi": _MANY,
    "fal-ai/flux-pro/kontext/max/multi": _MANY,
}


def reference_input(endpoint: str, params: Mapping[str, Any]) -> ReferenceInput | None:
    """Where the app at ``endpoint`` takes images: the ``reference_field`` parameter's field,
    else the known app's; None for an app that takes none (text to image only)."""
    known = REFERENCE_APPS.get(endpoint)
    field = params.get("reference_field")
    if field:
        return ReferenceInput(str(field), known.size if known else None)
    return known


def no_image_input(endpoint: str) -> str:
    """Why a ``reference_images`` port cannot go to the text-to-image app ``endpoint``."""
    return (
        f"fal app {endpoint!r} takes no input image: use an image-to-image or edit app (e.g. "
        "fal-flux-kontext), or set the reference_field model parameter to the app's image field"
    )


def _nearest_ratio(width: int, height: int) -> str:
    def distance(ratio: str) -> float:
        w, h = (int(v) for v in ratio.split(":"))
        return abs(math.log((w / h) / (width / height)))

    return min(KONTEXT_RATIOS, key=distance)


async def reference_inputs(
    spec: ReferenceInput,
    images: Sequence[Image],
    slug: str,
    size: tuple[int | None, int | None],
) -> dict[str, Any]:
    """The model input fields carrying ``images`` (as data URIs within ``IMAGE_LIMITS``) and
    the asked ``size`` (width, height)."""
    width, height = size
    if not images:
        raise ConfigurationError(
            f"model {slug!r} edits or transforms images: wire an image into the node's "
            "reference_images port, or use a text-to-image model (e.g. fal-flux-dev)."
        )
    chosen = list(images) if spec.many else list(images[:1])
    if len(images) > len(chosen):
        log.warning(
            "fal: %s takes one image in %r; sent the first of %d reference images (use a "
            "'*/multi' app, e.g. fal-flux-kontext, for all of them)",
            slug,
            spec.field,
            len(images),
        )
    urls = [(await prepared(image, IMAGE_LIMITS)).data_url() for image in chosen]
    fields: dict[str, Any] = {spec.field: urls if spec.many else urls[0]}
    if spec.size == "aspect_ratio" and width and height:
        fields["aspect_ratio"] = _nearest_ratio(int(width), int(height))
    return fields


# -- media out -------------------------------------------------------------------------------
def data_uri_bytes(url: str, cap: int) -> bytes:
    """The bytes of a base64 data URI fal answered (``sync_mode``), within ``cap``."""
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        raise EmptyOutputError(f"fal returned a data URI that is not base64 ({head[:40]}).")
    if len(payload) * 3 // 4 > cap:
        raise MediaError(f"fal output is over the {cap}-byte download cap.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise EmptyOutputError("fal returned a data URI that is not valid base64.") from None


def file_url(output: dict[str, Any], key: str, request_id: str) -> str:
    """The URL of the output's ``key`` file (the first of a list)."""
    value = output.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise EmptyOutputError(
            f"fal request {request_id} completed without a {key} URL: run the node again or "
            "add a fallback edge on 'empty'."
        )
    return url
