"""A faithful offline fake of Luma's Dream Machine API (``api.lumalabs.ai/dream-machine/v1``).

The paths and shapes are the ``lumaai`` SDK's (lumalabs/lumaai-python, ``api.md`` and
``src/lumaai/types/generation.py``): ``POST /generations/video`` (also the older ``POST
/generations``, docs.lumalabs.ai/docs/video-generation) and ``POST /generations/image``
create a generation and answer it (201); ``GET /generations/{id}`` reports it;
``DELETE /generations/{id}`` deletes it; ``GET /ping`` and ``GET /credits`` answer too.
Requests need ``Authorization: Bearer <key>``; errors are ``{"detail": "..."}`` (Luma does not
document its 401 texts: the ones here are plausible, not copied).

Bodies are checked as docs.lumalabs.ai/docs/errors lists ("Prompt is required", "Prompt is
too short...", loop with keyframes, "No keyframes provided"), against the SDK's models
(``ray-2``, ``ray-flash-2``, ``ray-1-6``; ``photon-1``, ``photon-flash-1``), aspect ratios,
durations (``5s``/``9s``) and resolutions, with a 400. A generation goes ``queued`` →
``dreaming`` → ``completed`` over ``sim.poll_steps`` polls, with ``assets.image`` (JPEG or
PNG) or ``assets.video`` (a real H.264 MP4) on Luma's CDN, served through
``sim.serve_download``.

Keyframe images — and Photon's reference images (``image_ref``, ``style_ref``,
``character_ref.identity0.images``: at most 4 each, weights 0..1, checked with a 400) — are
downloaded by Luma itself, so only URLs count: a ``data:`` URI, a non-https URL, or an
IP-address / localhost host fails the generation with "Failed to read user input frames"
(Luma documents that reason for keyframes; the fake gives it for references too). The
generation's ``request`` keeps the references as sent. An https URL the simulator serves
(``sim.serve_download``) is the video's first frame; any other https URL cannot be fetched
offline, so the fake draws the frame from the prompt instead.

A content_policy fault fails the generation with "Advanced prompt moderation failed"; an
``empty`` fault completes it without assets; ``sim.state("luma")["fail"] = "<reason>"`` fails
the next one with that ``failure_reason``. With ``Simulator(limits={"luma": {"concurrency":
N}})`` a create past N unfinished generations answers 429, as Luma's concurrent-generation
limit does (docs.lumalabs.ai/docs/rate-limits); ``rpm=`` counts creates.

Endpoint names for counting: ``generations.video``, ``generations.image``,
``generations.get``, ``generations.delete``, ``ping``, ``credits``.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from PIL import UnidentifiedImageError

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import digest, image_bytes
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._video import mp4_bytes, video_size

__all__ = ["CDN", "FAKE", "IMAGE_MODELS", "VIDEO_MODELS", "LumaFake"]

PREFIX = "/dream-machine/v1"
CDN = "https://storage.cdn-luma.com"
VIDEO_MODELS = ("ray-2", "ray-flash-2", "ray-1-6")
IMAGE_MODELS = ("photon-1", "photon-flash-1")
_RATIOS = {"1:1": (1, 1), "16:9": (16, 9), "9:16": (9, 16), "4:3": (4, 3), "3:4": (3, 4)}
_RATIOS |= {"21:9": (21, 9), "9:21": (9, 21)}
_DURATIONS = ("5s", "9s")
_RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
#: Photon's reference bounds: images per field, and an ``image_ref`` weight's default.
MAX_REFERENCES = 4
REFERENCE_WEIGHT = 0.85


@dataclass
class _Generation:
    id: str
    kind: str  # "video" or "image"
    model: str
    request: dict[str, Any]
    created_at: str
    steps: int
    polls: int = 0
    failure: str | None = None
    empty: bool = False
    assets: dict[str, Any] | None = None
    done: bool = False


class LumaFake(ProviderFake):
    """The Dream Machine API on ``api.lumalabs.ai``."""

    name = "luma"
    endpoints = (
        "generations.video",
        "generations.image",
        "generations.list",
        "generations.get",
        "generations.delete",
        "ping",
        "credits",
    )
    hosts = ("api.lumalabs.ai",)

    auth = AuthCheck(
        credentials=(Credential("authorization", schemes=("bearer",)),),
        missing=Failure(401, None, "Not authenticated"),
        invalid=Failure(401, None, "Invalid API key"),
    )
    errors = FaultErrors(
        rate_limit=Failure(429, None, "Too many requests, please slow down"),
        server_error=Failure(500, None, "Internal Server Error"),
        unavailable=Failure(503, None, "Service Unavailable"),
        overloaded=Failure(502, None, "Upstream service unavailable"),
    )
    rate_limited = Failure(
        429, None, "Rate limit exceeded: at most {limit} requests per {per}, try again later"
    )
    limit_endpoints = ("generations.video", "generations.image")
    limit_concurrency = "jobs"

    def endpoint(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/").removeprefix(PREFIX)
        if path in ("/generations", "/generations/video"):
            return "generations.video" if request.method == "POST" else "generations.list"
        if path == "/generations/image":
            return "generations.image"
        if path.startswith("/generations/"):
            return "generations.delete" if request.method == "DELETE" else "generations.get"
        return path.strip("/").replace("/", ".") or "root"

    def envelope(self, failure: Failure) -> httpx.Response:
        return httpx.Response(
            failure.status, json={"detail": failure.message}, headers=dict(failure.headers)
        )

    @staticmethod
    def _detail(status: int, detail: str) -> httpx.Response:
        return httpx.Response(status, json={"detail": detail})

    def _generations(self) -> dict[str, _Generation]:
        found: dict[str, _Generation] = self.sim.state(self.name).setdefault("generations", {})
        return found

    def _seq(self) -> int:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    # -- requests ------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        if not path.startswith(PREFIX):
            return self._detail(404, "Not Found")
        path = path.removeprefix(PREFIX)
        try:
            if path in ("/generations", "/generations/video", "/generations/image"):
                if request.method != "POST":
                    return self._detail(405, "Method Not Allowed")
                kind = "image" if path.endswith("/image") else "video"
                return self._create(request, kind)
            match = re.fullmatch(r"/generations/([^/]+)", path)
            if match:
                if request.method == "GET":
                    return self._get(match.group(1))
                if request.method == "DELETE":
                    self._find(match.group(1))
                    del self._generations()[match.group(1)]
                    return httpx.Response(204)
                return self._detail(405, "Method Not Allowed")
            if path == "/ping" and request.method == "GET":
                return httpx.Response(200, json={"message": "pong"})
            if path == "/credits" and request.method == "GET":
                return httpx.Response(200, json={"credit_balance": 100000.0})
        except Reject as rejected:
            return rejected.response
        return self._detail(404, "Not Found")

    def _create(self, request: httpx.Request, kind: str) -> httpx.Response:
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            return self._detail(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return self._detail(400, "Unknown request type")
        models = IMAGE_MODELS if kind == "image" else VIDEO_MODELS
        model = body.get("model")
        if model not in models:
            allowed = ", ".join(models)
            return self._detail(400, f"Invalid model {model!r}: use one of {allowed}")
        problem = self._check(body, kind)
        if problem:
            return self._detail(400, problem)
        limit = self._concurrency()
        if limit is not None:
            active = sum(1 for g in self._generations().values() if not g.done)
            if active >= limit:
                message = (
                    f"Too many concurrent generations: at most {limit} at once; retry when "
                    "one has finished"
                )
                return self.envelope(Failure(429, None, message, {"retry-after": "10"}))
        seq = self._seq()
        gen_id = str(uuid.UUID(digest("luma-generation", str(self.sim.seed), str(seq))[:32]))
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else None
        failure = self.sim.state(self.name).pop("fail", None)
        if failure is None and self.sim.blocked(self, request, prompt):
            failure = "Advanced prompt moderation failed"
        if failure is None and not self._reachable(body):
            failure = "Failed to read user input frames"
        created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seq)
        generation = _Generation(
            id=gen_id,
            kind=kind,
            model=str(model),
            request={**body, "generation_type": kind},
            created_at=created.isoformat().replace("+00:00", "Z"),
            steps=max(int(self.sim.poll_steps), 0),
            failure=str(failure) if failure else None,
            empty=self.sim.emptied(self, request, prompt),
        )
        self._generations()[gen_id] = generation
        return httpx.Response(201, json=self._answer(generation, "queued"))

    def _concurrency(self) -> int | None:
        spec = self.sim.limit_spec(self.name)
        return spec.concurrency if spec is not None else None

    @staticmethod
    def _check(body: dict[str, Any], kind: str) -> str | None:
        """The first problem in a create body, worded as docs.lumalabs.ai/docs/errors does."""
        prompt = body.get("prompt")
        keyframes = body.get("keyframes")
        if prompt is None and (kind == "image" or not keyframes):
            return "Prompt is required"
        if prompt is not None:
            if not isinstance(prompt, str):
                return "Prompt must be a string"
            if len(prompt.strip()) < 3:
                return "Prompt is too short, minimum length is 3 characters"
            if len(prompt) > 5000:
                return "Prompt is too long, maximum length is 5000 characters"
        ratio = body.get("aspect_ratio")
        if ratio is not None and ratio not in _RATIOS:
            return f"Invalid aspect_ratio {ratio!r}: use one of {', '.join(_RATIOS)}"
        if kind == "image":
            fmt = body.get("format")
            if fmt is not None and fmt not in ("jpg", "png"):
                return f"Invalid format {fmt!r}: use jpg or png"
            return _reference_problem(body)
        duration = body.get("duration")
        if duration is not None and duration not in _DURATIONS:
            return f"Invalid duration {duration!r}: use one of {', '.join(_DURATIONS)}"
        resolution = body.get("resolution")
        if resolution is not None and resolution not in _RESOLUTIONS:
            return f"Invalid resolution {resolution!r}: use one of {', '.join(_RESOLUTIONS)}"
        if keyframes is not None:
            if not isinstance(keyframes, dict) or not (
                keyframes.get("frame0") or keyframes.get("frame1")
            ):
                return "No keyframes provided"
            for key in ("frame0", "frame1"):
                frame = keyframes.get(key)
                if frame is None:
                    continue
                if not isinstance(frame, dict) or frame.get("type") not in ("image", "generation"):
                    return f"Unknown request type: keyframes.{key} needs type image or generation"
                if frame["type"] == "image" and not isinstance(frame.get("url"), str):
                    return f"keyframes.{key}.url is required for an image keyframe"
            if body.get("loop") and keyframes.get("frame1"):
                return "Loop is not supported for end frame"
        return None

    def _frame_url(self, body: dict[str, Any]) -> str | None:
        keyframes = body.get("keyframes")
        frame = keyframes.get("frame0") if isinstance(keyframes, dict) else None
        url = frame.get("url") if isinstance(frame, dict) else None
        return url if isinstance(url, str) else None

    def _reachable(self, body: dict[str, Any]) -> bool:
        """Whether Luma could fetch every image the body names by URL (the first keyframe,
        and Photon's reference images)."""
        urls = [self._frame_url(body), *reference_urls(body)]
        return all(_fetchable(url) for url in urls if url is not None)

    def _frame(self, body: dict[str, Any]) -> bytes | None:
        url = self._frame_url(body)
        served: dict[str, httpx.Response] = self.sim.state("download")
        response = served.get(url) if url else None
        if response is None or response.headers.get("content-type", "") not in _IMAGE_TYPES:
            return None
        try:
            with pil_open(io.BytesIO(response.content)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            return None
        return response.content

    def _find(self, gen_id: str) -> _Generation:
        generation = self._generations().get(gen_id)
        if generation is None:
            raise Reject(self._detail(404, "Generation not found"))
        return generation

    def _get(self, gen_id: str) -> httpx.Response:
        generation = self._find(gen_id)
        generation.polls += 1
        if not generation.done and generation.polls <= generation.steps // 2:
            return httpx.Response(200, json=self._answer(generation, "queued"))
        if not generation.done and generation.polls < generation.steps:
            return httpx.Response(200, json=self._answer(generation, "dreaming"))
        generation.done = True
        if generation.failure is not None:
            return httpx.Response(200, json=self._answer(generation, "failed"))
        if generation.assets is None:
            generation.assets = {} if generation.empty else self._render(generation)
        return httpx.Response(200, json=self._answer(generation, "completed"))

    def _answer(self, generation: _Generation, state: str) -> dict[str, Any]:
        return {
            "id": generation.id,
            "generation_type": generation.kind,
            "state": state,
            "failure_reason": generation.failure if state == "failed" else None,
            "created_at": generation.created_at,
            "assets": generation.assets if state == "completed" else None,
            "model": generation.model,
            "request": generation.request,
        }

    # -- outputs -------------------------------------------------------------------------
    def _render(self, generation: _Generation) -> dict[str, Any]:
        body = generation.request
        prompt = str(body.get("prompt") or "")
        folder = f"{CDN}/dream_machine/{generation.id}"
        if generation.kind == "image":
            w, h = _RATIOS[str(body.get("aspect_ratio") or "16:9")]
            scale = 1024 / max(w, h)
            size = self.sim.drawn_size(int(w * scale) & ~1, int(h * scale) & ~1)
            fmt, ext, mime = (
                ("PNG", "png", "image/png")
                if body.get("format") == "png"
                else ("JPEG", "jpg", "image/jpeg")
            )
            # The references steer the drawing: another reference, another image.
            refs = "|".join(reference_urls(body))
            data = image_bytes(f"{prompt}|{generation.id}|{refs}", *size, fmt)
            url = f"{folder}/{digest(data)[:12]}_result.{ext}"
            self._serve(url, data, mime)
            return {"image": url}
        frame = self._frame(body)
        w, h = _RATIOS[str(body.get("aspect_ratio") or "16:9")]
        width = 160
        height = max(int(width * h / w) & ~1, 16)
        seconds = 9 if body.get("duration") == "9s" else 5
        width, height = video_size(width, height)
        video = mp4_bytes(
            f"{prompt}|{generation.id}", width=width, height=height, seconds=seconds, image=frame
        )
        url = f"{folder}/{digest(video)[:12]}_video.mp4"
        self._serve(url, video, "video/mp4")
        thumb = image_bytes(prompt or generation.id, width, height, "JPEG")
        thumb_url = f"{folder}/video_0_thumb.jpg"
        self._serve(thumb_url, thumb, "image/jpeg")
        return {"video": url, "image": thumb_url}

    def _serve(self, url: str, data: bytes, mime: str) -> None:
        self.sim.serve_download(
            url,
            httpx.Response(
                200, content=data, headers={"content-type": mime, "content-length": str(len(data))}
            ),
        )


def _fetchable(url: str) -> bool:
    parsed = httpx.URL(url) if "://" in url else None
    if parsed is None or parsed.scheme != "https":
        return False  # a data: URI or a plain http URL: Luma fetches https URLs only
    host = parsed.host
    return not (
        host in ("localhost", "")
        or re.fullmatch(r"[\d.]+", host) is not None
        or ":" in host
        or host.endswith(".local")
    )


def reference_urls(body: dict[str, Any]) -> list[str]:
    """The URLs of a Photon body's ``image_ref``, ``style_ref`` and ``character_ref``
    images (the shapes checked by :func:`_reference_problem`)."""
    urls: list[str] = []
    for key in ("image_ref", "style_ref"):
        refs = body.get(key)
        for ref in refs if isinstance(refs, list) else []:
            if isinstance(ref, dict) and isinstance(ref.get("url"), str):
                urls.append(ref["url"])
    character = body.get("character_ref")
    for identity in character.values() if isinstance(character, dict) else []:
        images = identity.get("images") if isinstance(identity, dict) else None
        urls += [u for u in images if isinstance(u, str)] if isinstance(images, list) else []
    return urls


def _reference_problem(body: dict[str, Any]) -> str | None:
    """The first problem in Photon's references: ``image_ref`` / ``style_ref`` lists of
    ``{"url", "weight"?}`` and ``character_ref: {"identity0": {"images": [...]}}`` (lumaai
    SDK ``types/generations/image_create_params.py``), at most 4 images each (docs.comfy.org,
    Luma's image nodes)."""
    for key in ("image_ref", "style_ref"):
        refs = body.get(key)
        if refs is None:
            continue
        if not isinstance(refs, list) or not refs:
            return f"{key} must be a non-empty list of {{url, weight}} objects"
        if len(refs) > MAX_REFERENCES:
            return f"{key} takes at most {MAX_REFERENCES} images, not {len(refs)}"
        for index, ref in enumerate(refs):
            if not isinstance(ref, dict) or not isinstance(ref.get("url"), str):
                return f"{key}[{index}].url is required"
            weight = ref.get("weight", REFERENCE_WEIGHT)
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                return f"{key}[{index}].weight must be a number"
            if not 0 <= weight <= 1:
                return f"{key}[{index}].weight must be between 0 and 1"
    character = body.get("character_ref")
    if character is None:
        return None
    if not isinstance(character, dict) or set(character) - {"identity0"} or not character:
        return "character_ref takes one identity: {identity0: {images: [...]}}"
    images = (
        character["identity0"].get("images") if isinstance(character["identity0"], dict) else None
    )
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        return "character_ref.identity0.images must be a non-empty list of image URLs"
    if len(images) > MAX_REFERENCES:
        return f"character_ref.identity0 takes at most {MAX_REFERENCES} images, not {len(images)}"
    return None


FAKE = LumaFake
