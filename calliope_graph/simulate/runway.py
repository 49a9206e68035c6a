"""A faithful offline fake of the Runway API's image-to-video tasks (PROVIDERS.md §6).

Served on ``api.dev.runwayml.com``: ``POST /v1/image_to_video`` creates a task and answers
``{"id": <uuid>, "estimatedCost": {"credits"}}``; ``GET /v1/tasks/{id}`` reports it;
``DELETE /v1/tasks/{id}`` cancels it.
Requests need ``Authorization: Bearer <key>`` (else 401) and ``X-Runway-Version:
2024-11-06`` (else 400). Bodies are validated per model (``gen4_turbo``, ``gen4.5``,
``veo3.1``, ``veo3.1_fast``: ratios, durations, prompt text length, the
``promptImage`` data URI or https URL and its 5 MB limit, and its list form: one ``first``
item, plus one ``last`` for the Veo 3.1 models only — the task keeps it as ``last_image``)
with Runway's 400 shape ``{"error": "Validation of body failed", "issues": [{"code",
"path", "message"}], "docUrl"}``.

A task goes ``PENDING`` → ``RUNNING`` (with ``progress``) over ``sim.poll_steps`` polls,
then ``SUCCEEDED`` with ``output: [url]`` on a CloudFront-like host served through
``sim.serve_download``: a real H.264 MP4 that starts on the prompt image and zooms in.
``sim.state("runway")["throttled"] = n`` makes each new task wait ``n`` extra polls in
``THROTTLED``; ``state["fail"] = "<failureCode>"`` fails the next task with that code; an
undecodable image fails it with ``ASSET.INVALID``. A content_policy fault fails the task
with ``SAFETY.INPUT.TEXT``.

With ``Simulator(limits={"runway": {"concurrency": N}})`` at most N tasks run at once, as
Runway's tiers do: further tasks are accepted and report ``THROTTLED`` until a running one
finishes (or is cancelled), then start in the order they were created. A task finishes when
it is polled past its steps. ``daily=N`` answers 429 to the create past N a day.

Endpoint names for counting: ``image_to_video``, ``tasks.retrieve``, ``tasks.delete``.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from PIL import UnidentifiedImageError

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import digest
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._video import mp4_bytes, video_size

__all__ = ["FAKE", "MODELS", "VERSION", "RunwayFake"]

VERSION = "2024-11-06"
_CDN = "https://dnznrvs05pmza.cloudfront.net"
_DOCS = "https://docs.dev.runwayml.com/api"
_DATA_URI_LIMIT = 5 * 1024 * 1024
_URL_LIMIT = 2048
_PROMPT_LIMIT = 1000
_IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/webp")


@dataclass(frozen=True)
class _Model:
    ratios: tuple[str, ...]
    durations: tuple[int, ...]
    default_duration: int | None
    needs_text: bool = False
    credits_per_second: int = 5
    #: Takes a ``promptImage`` item at ``position: "last"`` (runwayml SDK 5.24:
    #: ``Veo3_1PromptImagePromptImage.position`` is ``"first" | "last"``, Gen-4's ``"first"``).
    last_frame: bool = False


#: What each image-to-video model accepts ([RW-SDK]).
MODELS: dict[str, _Model] = {
    "gen4_turbo": _Model(
        ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"),
        tuple(range(2, 11)),
        5,
    ),
    "gen4.5": _Model(
        ("1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"),
        tuple(range(2, 11)),
        None,
        needs_text=True,
        credits_per_second=12,
    ),
    # gen3a_turbo is gone from Runway's spec (retired 2026-07-30): the discriminator refuses it.
    "veo3.1": _Model(
        ("1280:720", "720:1280", "1080:1920", "1920:1080"), (4, 6, 8), 8, False, 40, True
    ),
    "veo3.1_fast": _Model(
        ("1280:720", "720:1280", "1080:1920", "1920:1080"), (4, 6, 8), 8, False, 15, True
    ),
}


@dataclass
class _Task:
    id: str
    created_at: str
    model: str
    ratio: str
    duration: int
    prompt: str
    image: bytes | None
    seed: int
    throttled: int
    steps: int
    fail: tuple[str, str] | None = None
    polls: int = 0
    cancelled: bool = False
    output: list[str] = field(default_factory=list)
    #: Waiting for a concurrency slot (``limits={"runway": {"concurrency": N}}``).
    queued: bool = False
    #: Reached SUCCEEDED or FAILED (it no longer holds a slot).
    done: bool = False
    #: The end frame (``promptImage`` item at ``position: "last"``), when one was given.
    last_image: bytes | None = None


def _quote(values: tuple[Any, ...]) -> str:
    return "|".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values)


class RunwayFake(ProviderFake):
    """Runway's developer API on ``api.dev.runwayml.com``."""

    name = "runway"
    endpoints = ("image_to_video", "tasks.retrieve", "tasks.delete")
    hosts = ("api.dev.runwayml.com",)

    def endpoint(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/")
        if path == "/v1/image_to_video":
            return "image_to_video"
        if path.startswith("/v1/tasks/"):
            return "tasks.delete" if request.method == "DELETE" else "tasks.retrieve"
        return path.strip("/").replace("/", ".") or "root"

    # -- wire ------------------------------------------------------------------------------
    def _fail(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> httpx.Response:
        return httpx.Response(status, json={"error": message, **extra}, headers=headers)

    def _issues(self, issues: list[dict[str, Any]]) -> Reject:
        return Reject(self._fail(400, "Validation of body failed", issues=issues, docUrl=_DOCS))

    auth = AuthCheck(
        credentials=(Credential("authorization", schemes=("bearer",)),),
        missing=Failure(
            401, None, "No API key was provided. Send it as 'Authorization: Bearer <key>'."
        ),
        invalid=Failure(401, None, "The provided API key is not valid."),
    )
    # Runway answers 504 when overloaded (no 529).
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            None,
            "You have exceeded the rate limit for your integration. Slow down your requests.",
        ),
        server_error=Failure(500, None, "An unexpected error occurred."),
        unavailable=Failure(503, None, "Service temporarily unavailable."),
        overloaded=Failure(504, None, "The service is overloaded. Try again later."),
    )

    # Runway has no request rate: ``concurrency=`` counts running tasks (the rest wait as
    # THROTTLED, see ``_retrieve``), and past the daily cap a create answers 429.
    rate_limited = Failure(
        429,
        None,
        "You have exceeded your daily generation limit of {limit}. Try again in "
        "{retry_after} seconds or upgrade your usage tier.",
    )
    limit_endpoints = ("image_to_video",)
    limit_concurrency = "jobs"

    def envelope(self, failure: Failure) -> httpx.Response:
        return self._fail(failure.status, failure.message, headers=dict(failure.headers))

    def _tasks(self) -> dict[str, _Task]:
        tasks: dict[str, _Task] = self.sim.state(self.name).setdefault("tasks", {})
        return tasks

    # -- requests --------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        version = request.headers.get("x-runway-version")
        if not version:
            return self._fail(
                400,
                "The X-Runway-Version header is required. Set it to a supported API version, "
                f"e.g. {VERSION}.",
            )
        if version != VERSION:
            return self._fail(
                400, f"Unsupported X-Runway-Version {version!r}. Supported versions: {VERSION}."
            )
        path = request.url.path.rstrip("/")
        try:
            if path == "/v1/image_to_video":
                if request.method != "POST":
                    return self._fail(405, "Method not allowed.")
                return self._create(request)
            match = re.fullmatch(r"/v1/tasks/([^/]+)", path)
            if match:
                if request.method == "GET":
                    return self._retrieve(match.group(1))
                if request.method == "DELETE":
                    return self._delete(match.group(1))
                return self._fail(405, "Method not allowed.")
        except Reject as rejected:
            return rejected.response
        return self._fail(404, "Not found.")

    # create ---------------------------------------------------------------------------------
    def _create(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            return self._fail(400, "Invalid JSON in request body.")
        if not isinstance(body, dict):
            raise self._issues([self._type_issue([], "object", body)])
        model_name = body.get("model")
        if not isinstance(model_name, str):
            raise self._issues([self._type_issue(["model"], "string", model_name)])
        model = MODELS.get(model_name)
        if model is None:
            raise self._issues(
                [
                    {
                        "code": "invalid_union",
                        "errors": [],
                        "note": "No matching discriminator",
                        "discriminator": "model",
                        "path": ["model"],
                        "message": "Invalid input",
                    }
                ]
            )
        issues: list[dict[str, Any]] = []
        image, last_image = self._prompt_images(body.get("promptImage"), model, issues)
        ratio = body.get("ratio")
        if ratio not in model.ratios:
            if ratio is None:
                issues.append(self._type_issue(["ratio"], "string", None))
            else:
                issues.append(
                    {
                        "code": "invalid_value",
                        "values": list(model.ratios),
                        "path": ["ratio"],
                        "message": f"Invalid option: expected one of {_quote(model.ratios)}",
                    }
                )
        duration = body.get("duration", model.default_duration)
        if duration is None:
            issues.append(self._type_issue(["duration"], "number", None))
        elif (
            not isinstance(duration, int)
            or isinstance(duration, bool)
            or duration not in model.durations
        ):
            issues.append(
                {
                    "code": "invalid_value",
                    "values": list(model.durations),
                    "path": ["duration"],
                    "message": f"Invalid option: expected one of {_quote(model.durations)}",
                }
            )
        text = body.get("promptText")
        if text is None and model.needs_text:
            issues.append(self._type_issue(["promptText"], "string", None))
        elif text is not None:
            if not isinstance(text, str):
                issues.append(self._type_issue(["promptText"], "string", text))
            elif not text.strip():
                issues.append(
                    {
                        "code": "too_small",
                        "minimum": 1,
                        "origin": "string",
                        "path": ["promptText"],
                        "message": "Too small: expected string to have >=1 characters",
                    }
                )
            elif len(text.encode("utf-16-le")) // 2 > _PROMPT_LIMIT:
                issues.append(
                    {
                        "code": "too_big",
                        "maximum": _PROMPT_LIMIT,
                        "origin": "string",
                        "path": ["promptText"],
                        "message": "Too big: expected string to have <=1000 characters",
                    }
                )
        seed = body.get("seed")
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 4294967295
        ):
            issues.append(
                {
                    "code": "too_big" if isinstance(seed, int) and seed > 0 else "invalid_type",
                    "path": ["seed"],
                    "message": "Invalid input: expected an integer from 0 to 4294967295",
                }
            )
        if issues:
            raise self._issues(issues)
        state = self.sim.state(self.name)
        # A version-4 UUID, as Runway's spec requires of task ids (deterministic here).
        raw = digest("runway-task", str(self.sim.seed), str(self._seq()))[:32]
        task_id = str(uuid.UUID(hex=raw, version=4))
        fail: tuple[str, str] | None = None
        forced = state.pop("fail", None)
        if forced:
            fail = (str(forced), f"The task failed ({forced}) (simulated).")
        elif self.sim.blocked(self, request, text if isinstance(text, str) else None):
            fail = (
                "SAFETY.INPUT.TEXT",
                "Your prompt text did not pass content moderation.",
            )
        elif any(i is not None and not self._decodes(i) for i in (image, last_image)):
            fail = ("ASSET.INVALID", "The prompt image could not be decoded as an image.")
        created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=self._seq())
        self._tasks()[task_id] = _Task(
            id=task_id,
            created_at=created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            model=model_name,
            ratio=str(ratio),
            duration=int(duration or 0),
            prompt=text if isinstance(text, str) else "",
            image=image,
            seed=int(seed) if isinstance(seed, int) else int(digest(task_id)[:8], 16),
            throttled=max(int(state.get("throttled", 0)), 0),
            steps=max(int(self.sim.poll_steps), 0),
            fail=fail,
            queued=self._concurrency() is not None,
            last_image=last_image,
        )
        self._schedule()
        # Runway's spec: the create answer carries the credits the task is expected to cost.
        estimate = MODELS[model_name].credits_per_second * int(duration or 0)
        return httpx.Response(200, json={"id": task_id, "estimatedCost": {"credits": estimate}})

    def _concurrency(self) -> int | None:
        spec = self.sim.limit_spec(self.name)
        return spec.concurrency if spec is not None else None

    def _schedule(self) -> None:
        """Start queued tasks, oldest first, while fewer than ``concurrency`` are running."""
        limit = self._concurrency()
        tasks = list(self._tasks().values())
        if limit is None:
            for task in tasks:
                task.queued = False
            return
        running = sum(1 for t in tasks if not (t.queued or t.done or t.cancelled))
        for task in tasks:
            if running >= limit:
                break
            if task.queued and not task.cancelled:
                # Its next poll is its first step (PENDING).
                task.queued = False
                task.throttled = max(task.throttled, task.polls)
                running += 1

    def _seq(self) -> int:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    @staticmethod
    def _type_issue(path: list[str], expected: str, got: Any) -> dict[str, Any]:
        received = "undefined" if got is None else type(got).__name__
        return {
            "expected": expected,
            "code": "invalid_type",
            "path": path,
            "message": f"Invalid input: expected {expected}, received {received}",
        }

    def _prompt_images(
        self, value: Any, model: _Model, issues: list[dict[str, Any]]
    ) -> tuple[bytes | None, bytes | None]:
        """The first and last frames' bytes of ``promptImage``: a string (the first frame)
        or ``[{"uri", "position"}]`` — one ``first``, and one ``last`` where the model takes
        an end frame (Veo 3.1: "an array with a first frame and optionally a last frame";
        a last frame alone is refused, as Runway's docs say)."""
        if not isinstance(value, list):
            return self._prompt_image(value, ["promptImage"], issues), None
        allowed = ("first", "last") if model.last_frame else ("first",)
        for index, item in enumerate(value):
            position = item.get("position") if isinstance(item, dict) else None
            if position not in allowed:
                issues.append(
                    {
                        "code": "invalid_value",
                        "values": list(allowed),
                        "path": ["promptImage", index, "position"],
                        "message": f"Invalid option: expected one of {_quote(allowed)}",
                    }
                )
                return None, None
        positions = [item["position"] for item in value]
        if positions.count("first") != 1 or positions.count("last") > 1:
            issues.append(
                {
                    "code": "custom",
                    "path": ["promptImage"],
                    "message": "Exactly one prompt image with position 'first' is required"
                    + (", and at most one with position 'last'" if model.last_frame else ""),
                }
            )
            return None, None
        found: dict[str, bytes | None] = {}
        for index, item in enumerate(value):
            path: list[Any] = ["promptImage", index, "uri"]
            found[item["position"]] = self._prompt_image(item.get("uri"), path, issues)
        return found.get("first"), found.get("last")

    def _prompt_image(
        self, value: Any, path: list[Any], issues: list[dict[str, Any]]
    ) -> bytes | None:
        """The image bytes of one prompt image (a data URI or an https URL)."""
        if not isinstance(value, str):
            issues.append(self._type_issue(path, "string", value))
            return None
        if value.startswith("data:"):
            if len(value) > _DATA_URI_LIMIT:
                issues.append(
                    {
                        "code": "too_big",
                        "path": path,
                        "message": f"Data URI is {len(value)} bytes; data URIs must be under "
                        f"{_DATA_URI_LIMIT} bytes. Upload the asset or pass an HTTPS URL.",
                    }
                )
                return None
            match = re.fullmatch(r"data:([\w/+.-]+);base64,(.*)", value, re.DOTALL)
            if match is None:
                issues.append({"code": "custom", "path": path, "message": "Invalid data URI."})
                return None
            if match.group(1).lower() not in _IMAGE_TYPES:
                issues.append(
                    {
                        "code": "custom",
                        "path": path,
                        "message": f"Unsupported asset type {match.group(1)!r}: use "
                        "image/jpeg, image/png or image/webp.",
                    }
                )
                return None
            try:
                return base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                issues.append({"code": "custom", "path": path, "message": "Invalid data URI."})
                return None
        return self._fetch(value, path, issues)

    def _fetch(self, url: str, path: list[Any], issues: list[dict[str, Any]]) -> bytes | None:
        parsed = httpx.URL(url)
        problem = None
        if parsed.scheme != "https":
            problem = "Only HTTPS URLs are allowed."
        elif len(url) > _URL_LIMIT:
            problem = f"URLs must be at most {_URL_LIMIT} characters."
        else:
            try:
                ipaddress.ip_address(parsed.host)
                problem = "URLs must be hosted on a domain, not an IP address."
            except ValueError:
                pass
        served: dict[str, httpx.Response] = self.sim.state("download")
        if problem is None:
            response = served.get(url)
            if response is None:
                problem = 'Failed to fetch asset. Received HTTP response code "404".'
            else:
                kind = response.headers.get("content-type", "")
                if kind.split(";")[0] not in _IMAGE_TYPES:
                    problem = f"Unsupported Content-Type {kind!r} for an image asset."
                else:
                    return response.content
        issues.append({"code": "custom", "path": path, "message": problem})
        return None

    @staticmethod
    def _decodes(data: bytes) -> bool:
        try:
            with pil_open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            return False
        return True

    # tasks ----------------------------------------------------------------------------------
    def _task(self, task_id: str) -> _Task:
        task = self._tasks().get(task_id)
        if task is None:
            raise Reject(self._fail(404, "Task not found."))
        return task

    def _retrieve(self, task_id: str) -> httpx.Response:
        task = self._task(task_id)
        self._schedule()
        task.polls += 1
        if task.queued:  # still no slot: this poll is a THROTTLED one
            task.throttled = task.polls
        body: dict[str, Any] = {"id": task.id, "createdAt": task.created_at}
        credits = MODELS[task.model].credits_per_second * task.duration
        if task.cancelled:
            body.update(status="CANCELLED", cost={"credits": 0})
        elif task.polls <= task.throttled + task.steps:
            step = task.polls - task.throttled  # 1: PENDING, 2..steps: RUNNING
            if step <= 0:
                body.update(status="THROTTLED")
            elif step == 1:
                body.update(status="PENDING")
            else:
                body.update(status="RUNNING", progress=round((step - 1) / task.steps, 2))
            body["estimatedCost"] = {"credits": credits}
        elif task.fail is not None:
            code, failure = task.fail
            body.update(status="FAILED", failure=failure, failureCode=code, cost={"credits": 0})
            task.done = True
        else:
            task.done = True
            if not task.output:
                task.output = [self._render(task)]
            body.update(status="SUCCEEDED", output=list(task.output), cost={"credits": credits})
        return httpx.Response(200, json=body)

    def _delete(self, task_id: str) -> httpx.Response:
        task = self._task(task_id)
        task.cancelled = True
        self._schedule()
        return httpx.Response(204)

    def _render(self, task: _Task) -> str:
        """Make the task's MP4, serve it from the CDN, return its signed URL."""
        w, h = (int(v) for v in task.ratio.split(":"))
        scale = 8
        width, height = video_size((w // scale) & ~1, (h // scale) & ~1)
        video = mp4_bytes(
            f"{task.prompt}|{task.seed}",
            width=width,
            height=height,
            seconds=task.duration,
            image=task.image,
        )
        name = digest(video)[:32]
        token = digest("jwt", name)[:48]
        url = f"{_CDN}/{task.id}/{name}.mp4?_jwt={token}"
        self.sim.serve_download(
            url,
            httpx.Response(
                200,
                content=video,
                headers={
                    "content-type": "video/mp4",
                    "content-length": str(len(video)),
                    "accept-ranges": "bytes",
                },
            ),
        )
        return url


FAKE = RunwayFake
