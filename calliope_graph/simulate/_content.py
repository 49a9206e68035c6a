"""Deterministic content for the fakes: text, images, JSON from a schema, image captions.

Everything here is a pure function of its inputs, so a simulated run is reproducible.
"""

from __future__ import annotations

import hashlib
import io
import random
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw, ImageStat

from calliope_graph.media import pil_open

__all__ = [
    "analysis_answer",
    "describe_image",
    "digest",
    "image_bytes",
    "json_for_schema",
    "last_user_text",
    "story_text",
]

_NOUNS = [
    "lantern",
    "harbor",
    "fox",
    "river",
    "tower",
    "garden",
    "comet",
    "violin",
    "orchard",
    "meadow",
    "lighthouse",
    "raven",
    "forest",
    "mirror",
    "bridge",
    "cloud",
    "island",
    "clock",
    "compass",
    "kite",
]
_ADJS = [
    "quiet",
    "golden",
    "distant",
    "silver",
    "hidden",
    "curious",
    "gentle",
    "ancient",
    "bright",
    "restless",
]
_VERBS = [
    "wanders",
    "sings",
    "drifts",
    "waits",
    "glows",
    "listens",
    "turns",
    "dreams",
    "rises",
    "whispers",
]


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _rng(*parts: str | bytes) -> random.Random:
    return random.Random(int(digest(*parts)[:16], 16))


def story_text(prompt: str, *, sentences: int = 3, model: str = "") -> str:
    """A few deterministic sentences that pick up words from the prompt."""
    rng = _rng(prompt, model)
    words = [w.strip(".,;:!?\"'()").lower() for w in prompt.split()]
    echoes = [w for w in words if len(w) > 4][-6:] or ["story"]
    out = []
    for _ in range(max(sentences, 1)):
        out.append(
            f"The {rng.choice(_ADJS)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} near the "
            f"{rng.choice(echoes)}, and the {rng.choice(_NOUNS)} {rng.choice(_VERBS)}."
        )
    return " ".join(out)


def image_bytes(prompt: str, width: int = 256, height: int = 256, fmt: str = "PNG") -> bytes:
    """A real image whose colours and shapes derive from ``prompt``, with the prompt drawn on."""
    rng = _rng(prompt, f"{width}x{height}")
    bg = tuple(rng.randrange(40, 220) for _ in range(3))
    im = PILImage.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = (
            min(width, x0 + rng.randrange(8, width // 2 + 9)),
            min(height, y0 + rng.randrange(8, height // 2 + 9)),
        )
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    draw.text((6, 6), prompt[:40], fill=(255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


_COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (220, 200, 40),
    "white": (235, 235, 235),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "purple": (130, 50, 160),
    "orange": (230, 130, 30),
}


def describe_image(data: bytes) -> dict[str, Any]:
    """A caption, tags and objects derived from the image's pixels and size."""
    try:
        with pil_open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
            mean = ImageStat.Stat(rgb).mean
            width, height = rgb.size
    except OSError:
        return {"caption": "an unreadable image", "tags": [], "objects": []}
    colour = min(
        _COLOURS,
        key=lambda c: sum((a - b) ** 2 for a, b in zip(_COLOURS[c], mean, strict=False)),
    )
    rng = _rng(data[:4096])
    objects = rng.sample(list(_NOUNS), 2)
    shape = "wide" if width > height * 1.2 else ("tall" if height > width * 1.2 else "square")
    caption = f"a {colour} {shape} scene with a {objects[0]} and a {objects[1]}"
    return {
        "caption": caption,
        "tags": [colour, shape, "indoor" if rng.random() < 0.5 else "outdoor", *objects],
        "objects": objects,
        "text": f"{objects[0].upper()} {rng.randrange(10, 99)}",
        "width": width,
        "height": height,
    }


def json_for_schema(schema: dict[str, Any], seed: str) -> Any:
    """A value valid against a (pydantic-generated) JSON Schema, deterministic from ``seed``."""
    defs = schema.get("$defs", {})
    rng = _rng(seed)

    def gen(node: dict[str, Any], name: str) -> Any:
        if "$ref" in node:
            return gen(defs[node["$ref"].split("/")[-1]], name)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return rng.choice(node["enum"])
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                options = [o for o in node[key] if o.get("type") != "null"] or node[key]
                return gen(options[0], name)
        if "default" in node and rng.random() < 0.3:
            return node["default"]
        kind = node.get("type", "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if kind == "object":
            props = node.get("properties", {})
            return {k: gen(v, k) for k, v in props.items()}
        if kind == "array":
            count = max(node.get("minItems", 1), min(node.get("maxItems", 3), 2 + rng.randrange(2)))
            return [gen(node.get("items", {}), name) for _ in range(count)]
        if kind == "integer":
            lo, hi = node.get("minimum", 1), node.get("maximum", 100)
            return rng.randint(int(lo), int(hi))
        if kind == "number":
            lo, hi = node.get("minimum", 0.0), node.get("maximum", 1.0)
            return round(rng.uniform(float(lo), float(hi)), 3)
        if kind == "boolean":
            return rng.random() < 0.5
        words = [rng.choice(_ADJS), rng.choice(_NOUNS)]
        if name in ("description", "setting", "summary", "text", "caption"):
            words = [
                rng.choice(_ADJS),
                rng.choice(_NOUNS),
                rng.choice(_VERBS),
                "by the",
                rng.choice(_NOUNS),
            ]
        value = " ".join(words)
        max_len = node.get("maxLength")
        return value[:max_len] if max_len else value

    return gen(schema, "root")


def analysis_answer(data: bytes) -> dict[str, Any]:
    """What a vision-model fake 'sees' in an image: an ImageAnalysis-shaped dict from its
    pixels (an empty ``data``, e.g. an image given by URL, gets a neutral answer)."""
    if not data:
        return {"description": "An image at a URL.", "captions": [], "tags": [], "objects": []}
    info = describe_image(data)
    return {
        "description": f"The picture shows {info['caption']}.",
        "captions": [info["caption"]],
        "tags": list(info.get("tags", [])),
        "objects": list(info.get("objects", [])),
        "text": str(info.get("text", "")),
    }


def last_user_text(messages: Any) -> str | None:
    """The text of the last user turn of chat ``messages`` (OpenAI or Anthropic shape)."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type", "text") == "text" and "text" in p
            )
    return None
