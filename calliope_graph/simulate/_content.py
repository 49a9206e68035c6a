"""Deterministic content for the fakes: text, images, JSON from a schema, image captions.

Everything here is a pure function of its inputs, so a simulated run is reproducible.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from PIL import Image as PILImage
from PIL import ImageStat

from calliope_graph.media import pil_open
from calliope_graph.simulate._scene import MARK, draw_scene, has_mark

__all__ = [
    "analysis_answer",
    "describe_image",
    "describe_text",
    "digest",
    "image_bytes",
    "image_probe",
    "json_for_schema",
    "last_user_text",
    "prompt_nouns",
    "scene_image",
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


_STOP_WORDS = (
    "a an the and or but if of in on at to for from by with about into onto over under after "
    "before between through during without within near than then so as is are was were be "
    "been being am do does did have has had will would can could should may might must shall "
    "it its it's this that these those there here their they them he she his her him we us "
    "our you your i me my mine who whom whose which what when where why how all any both each "
    "few more most other some such no nor not only own same too very just also again once one "
    "two three four five six seven eight nine ten write tell describe create make generate "
    "draw paint render show give story stories short long poem tale paragraph sentence "
    "sentences words word please picture image photo scene video clip style like using use "
    "called named small big little simple new first last next up down out off back still "
    "while along across around above below behind beside upon json answer reply return output "
    "text following based given prompt image's keep brief briefly vivid detailed kind sort "
    "way something someone thing things lot many much let lets let's get gets got go goes "
    "went see seen look looks looking red blue green yellow purple pink white black grey "
    "gray brown golden silver dark bright tiny huge"
)
_STOP = frozenset(_STOP_WORDS.split())
_FALLBACK = ["lantern", "garden", "river"]
#: Story sentences; {0}, {1} are the prompt's nouns, {a} an adjective, {t} a time of day.
_OPENINGS = [
    "Once upon a time, in a {a} valley, there lived a {0}.",
    "Long ago, a {a} {0} set out at {t} to find the {1}.",
    "Nobody in the village had ever seen a {0} as {a} as this one.",
    "It began on a {a} {t}, when the {0} first heard about the {1}.",
]
_MIDDLES = [
    "The {0} walked a long way, until the {1} appeared on the horizon.",
    "At {t} the {0} stopped beside the {1} and listened to the wind.",
    "The {1} seemed {a} and strange, but the {0} was not afraid.",
    "Together, the {0} and the {1} crossed the hills before the light faded.",
    "The {0} remembered an old song about the {1} and hummed it softly.",
    "Near the {1}, the {0} found a {a} path that nobody had walked for years.",
    "Every evening the {0} told the {1} a story of its own.",
]
_ENDINGS = [
    "When {t} came, the {0} was home again, and the {1} glowed in its memory.",
    "And from that day on, the {0} never forgot the {1}.",
    "In the end the {0} and the {1} became the best of friends.",
    "The {0} smiled, for the {1} had been worth the journey.",
]
_TIMES = ["dawn", "noon", "dusk", "midnight", "sunrise", "nightfall"]


_DETERMINER_WORDS = "a an the his her its my our their your this these those some"
_DETERMINERS = frozenset(_DETERMINER_WORDS.split())
_SUBJECT_WORDS = "who that which he she it they we you i never always often"
_SUBJECTS = frozenset(_SUBJECT_WORDS.split())


def _noun_split(prompt: str) -> tuple[list[str], list[str]]:
    """The prompt's likely nouns (the last content word of each phrase that follows a
    determiner: "a quiet fox" → fox) and its other content words, each in order. A word
    after "who"/"it"/… or just before a determiner ("finds" in "a fox finds a lantern")
    is taken for a verb and left out."""
    tokens = [
        (raw.strip(".,;:!?\"'()[]{}<>*_#`~").lower(), raw)
        for raw in prompt.split("|", 1)[0].replace("-", " ").replace("/", " ").split()
    ]
    heads: list[str] = []
    rest: list[str] = []
    phrase: list[str] | None = None

    def close() -> None:
        nonlocal phrase
        if phrase:
            heads.append(phrase[-1])
            rest.extend(w for w in phrase[:-1] if w not in rest)
        phrase = None

    for k, (word, raw) in enumerate(tokens):
        previous = tokens[k - 1][0] if k else ""
        following = tokens[k + 1][0] if k + 1 < len(tokens) else ""
        content = len(word) >= 3 and word.isalpha() and word not in _STOP
        ends = raw[-1:] in ",.;:!?"
        verb = previous in _SUBJECTS or (
            following in _DETERMINERS and not ends and bool(phrase or rest)
        )
        if not content or word.endswith("ly") or verb:
            close()
        elif phrase is not None and len(phrase) < 2:
            phrase.append(word)
        elif phrase:  # a third content word ("the lighthouse keeper counts"): a verb
            close()
        elif word not in rest:
            rest.append(word)
        if word in _DETERMINERS:
            phrase = []
        elif ends:
            close()
    close()
    heads = list(dict.fromkeys(heads))
    return heads, [w for w in rest if w not in heads]


def prompt_nouns(prompt: str, limit: int = 6) -> list[str]:
    """The prompt's content words, likely nouns first: lowercase, no stop words, unique.

    A simple stand-in for noun extraction: the last content word of each phrase after a
    determiner ("a fox in a lantern garden" gives fox, garden, lantern), then every other
    word of three letters or more that is not a stop word nor, after "who"/"it"/…, a verb.
    A seed or index a fake appends after ``|`` is ignored.
    """
    heads, rest = _noun_split(prompt)
    return (heads + rest)[:limit]


def story_text(prompt: str, *, sentences: int = 3, model: str = "") -> str:
    """A short deterministic story whose characters and places are the prompt's own nouns.

    A small grammar: an opening, middle sentences and an ending, each a template filled
    with two of the prompt's nouns (see :func:`prompt_nouns`), an adjective and a time of
    day, all chosen from a generator seeded by the prompt and ``model``.
    """
    rng = _rng(prompt, model)
    heads, rest = _noun_split(prompt)
    nouns = (heads if len(heads) >= 2 else heads + rest)[:6] or list(_FALLBACK)
    if len(nouns) == 1:
        nouns.append(_FALLBACK[0] if nouns[0] != _FALLBACK[0] else _FALLBACK[1])
    count = max(sentences, 1)
    plan = [_OPENINGS] + [_MIDDLES] * max(count - 2, 0) + ([_ENDINGS] if count > 1 else [])
    middles = rng.sample(_MIDDLES, len(_MIDDLES))
    out = []
    for i, pool in enumerate(plan):
        template = middles[(i - 1) % len(middles)] if pool is _MIDDLES else rng.choice(pool)
        first, others = nouns[0], nouns[1:]
        second = others[(i - 1) % len(others)] if i else others[0]
        out.append(template.format(first, second, a=rng.choice(_ADJS), t=rng.choice(_TIMES)))
    return _ARTICLE.sub(r"\1n \2", " ".join(out))


#: "a" before a vowel becomes "an" ("a ancient path" → "an ancient path").
_ARTICLE = re.compile(r"\b([Aa]) ([aeiou])")


def scene_image(prompt: str, width: int, height: int) -> PILImage.Image:
    """The RGB picture :func:`image_bytes` encodes."""
    nouns = prompt_nouns(prompt, limit=8)
    words = {w.strip(".,;:!?\"'()").lower() for w in prompt.split("|", 1)[0].split()}
    return draw_scene(nouns, words, width, height, _rng(prompt, f"{width}x{height}"))


def image_bytes(prompt: str, width: int = 256, height: int = 256, fmt: str = "PNG") -> bytes:
    """A simple drawn scene of the prompt's nouns, with a small "simulated" mark.

    Known nouns (cat, fox, house, tree, sun, moon, sea, …; see
    :mod:`calliope_graph.simulate._scene`) are drawn as recognisable shapes, other nouns
    as a labelled generic object. The same ``prompt`` and size always give the same bytes;
    a seed after ``|`` varies the details, not the subject.
    """
    im = scene_image(prompt, width, height)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _colour_name(h: int, s: int, v: int) -> str:
    """A basic colour name for an HSV pixel (Pillow's 0-255 scales)."""
    if v < 45:
        return "black"
    if s < 40 or (s < 60 and v < 90):
        return "white" if v > 200 else "grey"
    hue = h * 360 // 255
    if hue < 15 or hue >= 340:
        if v < 130:
            return "brown"
        return "pink" if s < 120 and v > 170 else "red"
    if hue < 45:
        return "brown" if v < 150 or s < 90 else "orange"
    if hue < 70:
        return "brown" if v < 120 else "yellow"
    if hue < 165:
        return "green"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "pink" if v > 150 else "purple"


def _brightness(luma: float) -> str:
    if luma < 70:
        return "dark"
    if luma < 110:
        return "dim"
    if luma < 160:
        return "evenly lit"
    return "bright"


#: :func:`describe_image`'s answers by the digest of the image's bytes: the same picture is
#: often described more than once (a request's check, then its answer; ``webcam_story``'s
#: two analyses of one frame), and a description decodes the whole image and walks its
#: pixels in Python (~10 ms of a 640x480 photo, on the event loop while a latency runs).
_DESCRIBED: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
_DESCRIBED_MAX = 32
_T = TypeVar("_T")


def describe_image(data: bytes) -> dict[str, Any]:
    """What the image's pixels show: dominant colours, brightness, shape — nothing invented.

    The caption reads like "a wide photo with mostly orange and brown tones, bright"; the
    tags are the colour names (dominant first), the brightness, the shape and whether it
    looks like a photo (many distinct colours) or a drawing. No detector ships with the
    simulator, so ``objects`` and ``faces`` are empty; ``text`` (OCR) is "simulated" when
    the image carries the simulator's own mark (found pixel by pixel), else "".
    """
    info = _memo(_DESCRIBED, data, _describe)
    # a copy: a caller may change the answer (its lists) without changing the next one's
    return {k: list(v) if isinstance(v, list) else v for k, v in info.items()}


def _memo(table: OrderedDict[bytes, _T], data: bytes, make: Callable[[bytes], _T]) -> _T:
    """``make(data)``, kept in ``table`` by the digest of ``data`` (the last few only)."""
    key = hashlib.blake2b(data, digest_size=16).digest()
    if key in table:
        table.move_to_end(key)
        return table[key]
    value = table[key] = make(data)
    if len(table) > _DESCRIBED_MAX:
        table.popitem(last=False)
    return value


_PROBED: OrderedDict[bytes, tuple[str, int, int] | None] = OrderedDict()


def image_probe(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of an image whose pixels decode whole, else None (a fake's
    check of what it was sent; kept by digest, as :func:`describe_image`'s answers)."""
    return _memo(_PROBED, data, _probe)


def _probe(data: bytes) -> tuple[str, int, int] | None:
    try:
        with pil_open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            im.load()
            return fmt, im.size[0], im.size[1]
    except (OSError, SyntaxError, ValueError):
        return None


def _describe(data: bytes) -> dict[str, Any]:
    try:
        with pil_open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
    except OSError:
        return {"caption": "an unreadable image", "tags": [], "objects": [], "text": ""}
    width, height = rgb.size
    small = rgb.resize((48, 48), PILImage.Resampling.NEAREST)
    counts: dict[str, int] = {}
    hsv = small.convert("HSV").tobytes()
    for k in range(0, len(hsv), 3):
        name = _colour_name(hsv[k], hsv[k + 1], hsv[k + 2])
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    total = sum(counts.values())
    colours = [c for c in ranked[:3] if counts[c] >= 0.15 * total] or ranked[:1]
    luma = ImageStat.Stat(small.convert("L")).mean[0]
    light = _brightness(luma)
    kind = "photo" if len(small.getcolors(48 * 48) or ()) > 120 else "picture"
    shape = "wide" if width > height * 1.2 else ("tall" if height > width * 1.2 else "square")
    tones = (
        " and ".join(colours)
        if len(colours) < 3
        else f"{colours[0]}, {colours[1]} and {colours[2]}"
    )
    caption = f"a {shape} {kind} with mostly {tones} tones, {light}"
    return {
        "caption": caption,
        "tags": [*colours, light, shape, kind],
        "colours": colours,
        "brightness": round(luma / 255, 3),
        "objects": [],
        "faces": [],
        "text": MARK if has_mark(rgb) else "",
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
        "description": describe_text(info),
        "captions": [info["caption"]],
        "tags": list(info.get("tags", [])),
        "objects": list(info.get("objects", [])),
        "text": str(info.get("text", "")),
    }


def describe_text(info: dict[str, Any]) -> str:
    """A sentence describing :func:`describe_image`'s ``info`` (only what was measured)."""
    if info["caption"] == "an unreadable image":
        return "The image could not be read."
    text = str(info.get("text", ""))
    written = f' The word "{text}" is written in a corner.' if text else ""
    return f"The image shows {info['caption']}.{written} No objects or faces were detected."


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
