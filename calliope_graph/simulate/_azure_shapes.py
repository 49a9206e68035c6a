"""What the Azure Vision fake's answers are made of: deterministic numbers drawn from the
image, read blocks and polygons, smart crops; and the checks of a request's query (aspect
ratios, model version) and multipart body."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx

from calliope_graph.simulate._content import digest

if TYPE_CHECKING:
    from calliope_graph.simulate.azure_vision import AzureVisionFake

__all__ = ["V3_MODEL", "V4_MODEL"]

V3_MODEL = "2021-04-01"
V4_MODEL = "2023-10-01"


# -- helpers -------------------------------------------------------------------------------
class _Numbers:
    """Deterministic confidences, points and boxes for one image."""

    def __init__(self, data: bytes) -> None:
        self._seed = digest("azure-numbers", data[:8192], str(len(data)))
        self._n = 0

    def _unit(self) -> float:
        self._n += 1
        return int(digest(self._seed, str(self._n))[:8], 16) / 0xFFFFFFFF

    def confidence(self, low: float = 0.55, high: float = 0.99) -> float:
        return round(low + (high - low) * self._unit(), 4)

    def point(self, width: int, height: int) -> tuple[int, int]:
        return int(self._unit() * width * 0.5), int(self._unit() * height * 0.5)

    def box(
        self, width: int, height: int, keys: tuple[str, str, str, str] = ("x", "y", "w", "h")
    ) -> dict[str, int]:
        x, y = self.point(width, height)
        w = max(1, int((width - x) * (0.3 + 0.6 * self._unit())))
        h = max(1, int((height - y) * (0.3 + 0.6 * self._unit())))
        return dict(zip(keys, (x, y, w, h), strict=True))


def _read_blocks(text: str, rng: _Numbers, width: int, height: int) -> list[dict[str, Any]]:
    words = text.split()
    if not words:
        return []
    x, y = rng.point(width, height)
    entries = []
    cursor = x
    for word in words:
        w = max(8, 9 * len(word))
        entries.append(
            {
                "text": word,
                "boundingPolygon": _polygon(cursor, y, w, 14),
                "confidence": rng.confidence(0.9, 0.999),
            }
        )
        cursor += w + 6
    line = {"text": " ".join(words), "boundingPolygon": _polygon(x, y, cursor - x - 6, 14)}
    line["words"] = entries
    return [{"lines": [line]}]


def _polygon(x: int, y: int, w: int, h: int) -> list[dict[str, int]]:
    return [
        {"x": x, "y": y},
        {"x": x + w, "y": y},
        {"x": x + w, "y": y + h},
        {"x": x, "y": y + h},
    ]


def _crop(ratio: float, width: int, height: int) -> dict[str, int]:
    w = min(width, int(height * ratio))
    h = min(height, int(w / ratio))
    return {"x": (width - w) // 2, "y": (height - h) // 2, "w": w, "h": h}


def _ratios(fake: AzureVisionFake, raw: str | None) -> list[float]:
    if not raw:
        return []
    ratios: list[float] = []
    for part in raw.split(","):
        try:
            ratio = float(part)
        except ValueError:
            ratio = -1.0
        if not 0.75 <= ratio <= 1.8:
            raise fake._bad(
                True,
                "InvalidArgument",
                "Smart crop aspect ratios must be between 0.75 and 1.8 (inclusive).",
                "Invalid argument.",
            )
        ratios.append(ratio)
    return ratios


def _model_version(fake: AzureVisionFake, params: httpx.QueryParams, *, v4: bool) -> None:
    value = params.get("model-version")
    if value is None or value == "latest":
        return
    known = V4_MODEL if v4 else V3_MODEL
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", value) or value != known:
        raise fake._bad(
            v4,
            "InvalidModelVersion" if v4 else "BadArgument",
            f"The model version '{value}' is not supported. Use 'latest' or '{known}'.",
            "Invalid argument.",
        )


def _first_part(request: httpx.Request) -> bytes:
    """The first file part of a multipart body (v3.2 accepts multipart uploads)."""
    kind = request.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', kind)
    if match is None:
        return b""
    boundary = b"--" + match.group(1).encode()
    for part in request.content.split(boundary):
        head, sep, payload = part.partition(b"\r\n\r\n")
        if sep and b"filename=" in head:
            return payload.rstrip(b"\r\n")
    return b""
