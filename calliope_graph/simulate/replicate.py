"""A faithful offline fake of Replicate's prediction API (PROVIDERS.md §4).

Served on ``api.replicate.com`` with ``Authorization: Bearer <token>`` (the older ``Token``
scheme is accepted too); a missing or wrong token gets Replicate's 401 problem details.

* ``POST /v1/models/{owner}/{name}/predictions`` ``{"input"}`` for official models and
  ``POST /v1/predictions`` ``{"version", "input"}`` for model versions; 201 with the
  prediction. An unknown model is a 404, an unknown version a 422 ``Invalid version or not
  permitted``, bad inputs a 422 ``Input validation failed`` with ``invalid_fields``, checked
  against each model's input schema (required fields, types, enums, ranges).
* ``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel``.
* ``GET /v1/models/{owner}/{name}`` and ``GET /v1/models/{owner}/{name}/versions/{id}``
  (the official SDK reads a version's OpenAPI schema before running it).

Models: ``meta/meta-llama-3-8b-instruct`` and ``-70b-instruct`` (text, streamed tokens),
``black-forest-labs/flux-schnell`` (a list of WebP/JPEG/PNG URLs), ``black-forest-labs/
flux-1.1-pro`` (one URL), ``stability-ai/sdxl`` (a version; a list of PNG URLs) and
``yorickvp/llava-13b`` (a version; describes the ``image`` data URI or URL, in JSON when the
prompt asks for JSON). Files are real images served from ``replicate.delivery`` through
``sim.serve_download``.

A prediction is ``starting`` when created, ``processing`` while polled, and ends after
``sim.poll_steps`` polls (``sim.state("replicate")["cold_start"] = n`` keeps new ones
``starting`` for n more polls); ``processing`` logs carry tqdm-style progress lines.
``Prefer: wait=N`` finishes a prediction within the request when its simulated run time
(one second per step, ``state["step_seconds"]`` to change) fits in N seconds; otherwise
the answer comes at once, still ``starting`` (the hold itself is not simulated in time: use
``latency`` for that). ``state["fail"] = "<error>"`` fails the next prediction with that
error; a ``content_policy`` fault fails it with the model's own NSFW message; an ``empty``
fault makes it succeed with nothing (``[]``, or ``null`` for a one-file model).

Endpoint names for counting: ``predictions.create``, ``models.predictions.create``,
``predictions.get``, ``predictions.cancel``, ``models.get``, ``models.versions.get``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from calliope_graph.simulate._content import (
    analysis_answer,
    describe_image,
    describe_text,
    digest,
    image_bytes,
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

__all__ = ["FAKE", "MODELS", "ReplicateFake"]

API = "https://api.replicate.com"
_DELIVERY = "https://replicate.delivery"
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_TERMINAL = ("succeeded", "failed", "canceled")
_BODY_KEYS = frozenset(("input", "webhook", "webhook_completed", "webhook_events_filter", "stream"))
_SD_NSFW = "NSFW content detected. Try running it again, or try a different prompt."
_FLUX_NSFW = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)
_SENSITIVE = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _integer(**extra: Any) -> dict[str, Any]:
    return {"type": "integer", **extra}


def _number(**extra: Any) -> dict[str, Any]:
    return {"type": "number", **extra}


def _boolean(**extra: Any) -> dict[str, Any]:
    return {"type": "boolean", **extra}


_LLAMA_INPUTS: dict[str, dict[str, Any]] = {
    "prompt": _string(default=""),
    "system_prompt": _string(),
    "prompt_template": _string(),
    "max_tokens": _integer(minimum=1),
    "min_tokens": _integer(minimum=-1),
    "max_new_tokens": _integer(minimum=1),
    "temperature": _number(minimum=0, maximum=5),
    "top_p": _number(minimum=0, maximum=1),
    "top_k": _integer(minimum=-1),
    "presence_penalty": _number(),
    "frequency_penalty": _number(),
    "length_penalty": _number(minimum=0, maximum=5),
    "stop_sequences": _string(),
    "seed": _integer(),
    "log_performance_metrics": _boolean(),
}
_SCHEDULERS = [
    "DDIM",
    "DPMSolverMultistep",
    "HeunDiscrete",
    "KarrasDPM",
    "K_EULER_ANCESTRAL",
    "K_EULER",
    "PNDM",
]
_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]


@dataclass(frozen=True)
class _Model:
    kind: str  # "text", "image" or "vision"
    version: str
    official: bool
    inputs: dict[str, dict[str, Any]]
    required: tuple[str, ...] = ()
    single_url: bool = False
    nsfw: str = _SENSITIVE
    description: str = ""


MODELS: dict[str, _Model] = {
    "meta/meta-llama-3-8b-instruct": _Model(
        "text",
        "5a6809ca6288247d06daf6365557e5e429063f32a21146b2a807c682652136b8",
        True,
        _LLAMA_INPUTS,
        description="An 8 billion parameter language model from Meta, fine tuned for chat",
    ),
    "meta/meta-llama-3-70b-instruct": _Model(
        "text",
        "fbfb20b472b2f3bdd101412a9f70a0ed4fc0ced78a77ff00970ee7a2383c575d",
        True,
        _LLAMA_INPUTS,
        description="A 70 billion parameter language model from Meta, fine tuned for chat",
    ),
    "black-forest-labs/flux-schnell": _Model(
        "image",
        "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e",
        True,
        {
            "prompt": _string(),
            "aspect_ratio": _string(enum=_RATIOS, default="1:1"),
            "num_outputs": _integer(minimum=1, maximum=4, default=1),
            "num_inference_steps": _integer(minimum=1, maximum=4, default=4),
            "output_format": _string(enum=["webp", "jpg", "png"], default="webp"),
            "output_quality": _integer(minimum=0, maximum=100, default=80),
            "megapixels": _string(enum=["1", "0.25"], default="1"),
            "go_fast": _boolean(default=True),
            "disable_safety_checker": _boolean(default=False),
            "seed": _integer(),
        },
        ("prompt",),
        nsfw=_FLUX_NSFW,
        description="The fastest image generation model tailored for local development",
    ),
    "black-forest-labs/flux-1.1-pro": _Model(
        "image",
        "609793a667ed94b210242837d3c3c9fc9a64ae93685f15d75002ba0ed9a97f2b",
        True,
        {
            "prompt": _string(),
            "aspect_ratio": _string(
                enum=["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"],
                default="1:1",
            ),
            "width": _integer(minimum=256, maximum=1440),
            "height": _integer(minimum=256, maximum=1440),
            "output_format": _string(enum=["webp", "jpg", "png"], default="webp"),
            "output_quality": _integer(minimum=0, maximum=100, default=80),
            "safety_tolerance": _integer(minimum=1, maximum=6, default=2),
            "prompt_upsampling": _boolean(default=False),
            "seed": _integer(),
        },
        ("prompt",),
        single_url=True,
        description="Faster, better FLUX Pro",
    ),
    "stability-ai/sdxl": _Model(
        "image",
        "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
        False,
        {
            "prompt": _string(default="An astronaut riding a rainbow unicorn"),
            "negative_prompt": _string(default=""),
            "width": _integer(default=1024),
            "height": _integer(default=1024),
            "num_outputs": _integer(minimum=1, maximum=4, default=1),
            "scheduler": _string(enum=_SCHEDULERS, default="K_EULER"),
            "num_inference_steps": _integer(minimum=1, maximum=500, default=50),
            "guidance_scale": _number(minimum=1, maximum=50, default=7.5),
            "refine": _string(
                enum=["no_refiner", "expert_ensemble_refiner", "base_image_refiner"],
                default="no_refiner",
            ),
            "apply_watermark": _boolean(default=True),
            "disable_safety_checker": _boolean(default=False),
            "seed": _integer(),
        },
        nsfw=_SD_NSFW,
        description="A text-to-image generative AI model that creates beautiful images",
    ),
    "yorickvp/llava-13b": _Model(
        "vision",
        "80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb",
        False,
        {
            "image": _string(format="uri"),
            "prompt": _string(),
            "top_p": _number(minimum=0, maximum=1, default=1),
            "temperature": _number(minimum=0, default=0.2),
            "max_tokens": _integer(minimum=0, default=1024),
        },
        ("image", "prompt"),
        description="Visual instruction tuning towards large language and vision models",
    ),
}
_BY_VERSION = {model.version: name for name, model in MODELS.items()}


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: datetime
    steps: int
    cold: int
    fail: str | None
    empty: bool = False
    polls: int = 0
    canceled: bool = False
    output: Any = None
    done: bool = False
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.cold + self.steps


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


_UNAVAILABLE = Failure(
    503,
    None,
    "Replicate is temporarily unavailable. Please try again shortly.",
    extra={"title": "Service Unavailable"},
)


class ReplicateFake(ProviderFake):
    """Replicate's HTTP API on ``api.replicate.com``."""

    name = "replicate"
    endpoints = (
        "predictions.create",
        "predictions.list",
        "models.predictions.create",
        "predictions.get",
        "predictions.cancel",
        "models.get",
        "models.versions.get",
    )
    hosts = ("api.replicate.com",)

    def endpoint(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/")
        if path == "/v1/predictions":
            return "predictions.create" if request.method == "POST" else "predictions.list"
        if re.fullmatch(r"/v1/models/[^/]+/[^/]+/predictions", path):
            return "models.predictions.create"
        if re.fullmatch(r"/v1/predictions/[^/]+/cancel", path):
            return "predictions.cancel"
        if re.fullmatch(r"/v1/predictions/[^/]+", path):
            return "predictions.get"
        if re.fullmatch(r"/v1/models/[^/]+/[^/]+/versions/[^/]+", path):
            return "models.versions.get"
        if re.fullmatch(r"/v1/models/[^/]+/[^/]+", path):
            return "models.get"
        return path.strip("/").replace("/", ".") or "root"

    # -- wire ------------------------------------------------------------------------------
    @staticmethod
    def _problem(
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body: dict[str, Any] = {}
        if title is not None:
            body["title"] = title
        body.update({"detail": detail, "status": status, **extra})
        return httpx.Response(
            status,
            json=body,
            headers={"content-type": "application/problem+json", **(headers or {})},
        )

    auth = AuthCheck(
        credentials=(Credential("authorization", schemes=("bearer", "token")),),
        missing=Failure(
            401,
            None,
            "You did not pass an authentication token",
            extra={"title": "Unauthenticated"},
        ),
        invalid=Failure(
            401,
            None,
            "You did not pass a valid authentication token",
            extra={"title": "Unauthenticated"},
        ),
    )
    # Replicate has no 529; its 429 is a bare ``{"detail"}``, not problem details.
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            None,
            "Request was throttled. Your rate limit resets in ~{retry_after}s.",
            extra={"bare": True},
        ),
        server_error=Failure(
            500, None, "Internal server error", extra={"title": "Internal Server Error"}
        ),
        unavailable=_UNAVAILABLE,
        overloaded=_UNAVAILABLE,
    )
    retry_after = "30"
    # Over a configured limit: the same bare ``{"detail": ...}`` 429. Replicate limits
    # prediction creates (600/min); polls count against a separate, larger budget.
    rate_limited = Failure(
        429,
        None,
        "Request was throttled. Your rate limit resets in ~{retry_after}s.",
        extra={"bare": True},
    )
    limit_endpoints = ("predictions.create", "models.predictions.create")

    def envelope(self, failure: Failure) -> httpx.Response:
        if failure.extra.get("bare"):
            return httpx.Response(
                failure.status, json={"detail": failure.message}, headers=dict(failure.headers)
            )
        title = failure.extra.get("title")
        return self._problem(
            failure.status,
            failure.message,
            title=None if title is None else str(title),
            headers=dict(failure.headers),
        )

    def _prompt(self, request: httpx.Request) -> str | None:
        if not self.endpoint(request).endswith("predictions.create"):
            return None
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return None
        inputs = body.get("input") if isinstance(body, dict) else None
        prompt = inputs.get("prompt") if isinstance(inputs, dict) else None
        return prompt if isinstance(prompt, str) else None

    def _state(self) -> dict[str, Any]:
        return self.sim.state(self.name)

    def _predictions(self) -> dict[str, _Prediction]:
        predictions: dict[str, _Prediction] = self._state().setdefault("predictions", {})
        return predictions

    def _seq(self) -> int:
        state = self._state()
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    # -- requests --------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        endpoint = self.endpoint(request)
        try:
            if endpoint == "predictions.create":
                return self._create(request, None)
            if endpoint == "models.predictions.create":
                self._method(request, "POST")
                owner, name = path.split("/")[3:5]
                return self._create(request, f"{owner}/{name}")
            if endpoint == "predictions.get":
                self._method(request, "GET")
                return self._show(self._find(path.split("/")[3]))
            if endpoint == "predictions.cancel":
                self._method(request, "POST")
                prediction = self._find(path.split("/")[3])
                if not self._finished(prediction):
                    prediction.canceled = True
                return self._show(prediction, advance=False)
            if endpoint == "models.versions.get":
                self._method(request, "GET")
                owner, name, _, version = path.split("/")[3:7]
                return self._version(f"{owner}/{name}", version)
            if endpoint == "models.get":
                self._method(request, "GET")
                owner, name = path.split("/")[3:5]
                return self._model(f"{owner}/{name}")
        except Reject as rejected:
            return rejected.response
        return self._not_found()

    def _not_found(self) -> httpx.Response:
        return self._problem(404, "The requested resource could not be found.")

    def _method(self, request: httpx.Request, method: str) -> None:
        if request.method != method:
            raise Reject(self._problem(405, "Method not allowed."))

    # create ---------------------------------------------------------------------------------
    def _create(self, request: httpx.Request, official: str | None) -> httpx.Response:
        if request.method != "POST":
            raise Reject(self._problem(405, "Method not allowed."))
        if official is not None:
            model = MODELS.get(official)
            if model is None or not model.official:
                return self._not_found()
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            return self._problem(400, "The request body is not valid JSON.", title="Bad Request")
        if not isinstance(body, dict):
            return self._invalid([("type", "", "Invalid type. Expected: object")])
        problems: list[tuple[str, str, str]] = []
        allowed = _BODY_KEYS if official is not None else _BODY_KEYS | {"version"}
        if official is None and "version" not in body:
            problems.append(("required", "", "version is required"))
        if "input" not in body:
            problems.append(("required", "", "input is required"))
        for key in body:
            if key not in allowed:
                problems.append(
                    ("additional_property_not_allowed", "", f"Additional property {key} is not "
                     "allowed")
                )  # fmt: skip
        if problems:
            return self._invalid(problems)
        if official is None:
            name = _BY_VERSION.get(str(body["version"]).split(":")[-1])
            if name is None:
                return self._problem(
                    422,
                    "The specified version does not exist (or perhaps you don't have "
                    "permission to use it?)",
                    title="Invalid version or not permitted",
                )
        else:
            name = official
        model = MODELS[name]
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return self._invalid([("type", "input", "Invalid type. Expected: object")])
        problems = self._check_inputs(model, inputs)
        if problems:
            return self._invalid(problems)
        prediction = self._new(request, name, model, inputs)
        wait = self._prefer_wait(request)
        if wait is not None:
            step = float(self._state().get("step_seconds", 1.0))
            if prediction.total * step <= wait:
                prediction.polls = prediction.total
        return self._show(prediction, advance=False, status=201)

    def _invalid(self, problems: list[tuple[str, str, str]]) -> httpx.Response:
        detail = "".join(
            f"- {f'{where}: ' if where else ''}{text}\n" for _, where, text in problems
        )
        return self._problem(
            422,
            detail,
            title="Input validation failed",
            invalid_fields=[
                {"type": kind, "field": where, "description": text}
                for kind, where, text in problems
            ],
        )

    @staticmethod
    def _check_inputs(model: _Model, inputs: dict[str, Any]) -> list[tuple[str, str, str]]:
        problems: list[tuple[str, str, str]] = []
        for name in model.required:
            if name not in inputs:
                problems.append(("required", "input", f"{name} is required"))
        for name, value in inputs.items():
            spec = model.inputs.get(name)
            if spec is None:
                continue  # Replicate drops inputs a model does not declare
            where = f"input.{name}"
            kind = spec["type"]
            ok = {
                "string": isinstance(value, str),
                "integer": isinstance(value, int) and not isinstance(value, bool),
                "number": isinstance(value, int | float) and not isinstance(value, bool),
                "boolean": isinstance(value, bool),
            }[kind]
            if not ok:
                got = type(value).__name__.replace("str", "string").replace("int", "integer")
                problems.append(
                    ("invalid_type", where, f"Invalid type. Expected: {kind}, given: {got}")
                )
                continue
            if "enum" in spec and value not in spec["enum"]:
                options = ", ".join(f'"{v}"' for v in spec["enum"])
                problems.append(("enum", where, f"{name} must be one of the following: {options}"))
            if "minimum" in spec and value < spec["minimum"]:
                problems.append(
                    ("number_gte", where, f"Must be greater than or equal to {spec['minimum']}")
                )
            if "maximum" in spec and value > spec["maximum"]:
                problems.append(
                    ("number_lte", where, f"Must be less than or equal to {spec['maximum']}")
                )
            if spec.get("format") == "uri" and not re.match(r"^(https?|data):", value):
                problems.append(("format", where, "Does not match format 'uri'"))
        return problems

    @staticmethod
    def _prefer_wait(request: httpx.Request) -> float | None:
        prefer = request.headers.get("prefer", "")
        match = re.search(r"\bwait(?:=(\d+))?\b", prefer)
        if match is None:
            return None
        return float(min(max(int(match.group(1) or 60), 1), 60))

    def _new(
        self, request: httpx.Request, name: str, model: _Model, inputs: dict[str, Any]
    ) -> _Prediction:
        seq = self._seq()
        raw = digest("replicate-prediction", str(self.sim.seed), str(seq))
        prediction_id = "".join(_ALPHABET[int(raw[i : i + 2], 16) % 32] for i in range(0, 52, 2))
        state = self._state()
        fail = state.pop("fail", None)
        if fail is None and self.sim.blocked(self, request, self._prompt(request)):
            fail = model.nsfw
        if fail is None and model.kind == "vision" and self._image(inputs) is None:
            fail = "cannot identify image file <_io.BytesIO object at 0x7f3a1c2b9e50>"
        empty = fail is None and self.sim.emptied(self, request, self._prompt(request))
        prediction = _Prediction(
            id=prediction_id,
            model=name,
            version=model.version,
            input=dict(inputs),
            created=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seq),
            steps=max(int(self.sim.poll_steps), 0),
            cold=max(int(state.get("cold_start", 0)), 0),
            fail=str(fail) if fail is not None else None,
            empty=empty,
        )
        prediction.urls = {
            "get": f"{API}/v1/predictions/{prediction_id}",
            "cancel": f"{API}/v1/predictions/{prediction_id}/cancel",
            "stream": f"https://stream.replicate.com/v1/files/{raw[:40]}",
            "web": f"https://replicate.com/p/{prediction_id}",
        }
        self._predictions()[prediction_id] = prediction
        return prediction

    # predictions ----------------------------------------------------------------------------
    def _find(self, prediction_id: str) -> _Prediction:
        prediction = self._predictions().get(prediction_id)
        if prediction is None:
            raise Reject(self._not_found())
        return prediction

    @staticmethod
    def _finished(prediction: _Prediction) -> bool:
        return prediction.canceled or prediction.polls >= prediction.total

    def _status(self, prediction: _Prediction) -> str:
        if prediction.canceled:
            return "canceled"
        if prediction.polls >= prediction.total:
            return "failed" if prediction.fail is not None else "succeeded"
        return "starting" if prediction.polls <= prediction.cold else "processing"

    def _show(
        self, prediction: _Prediction, *, advance: bool = True, status: int = 200
    ) -> httpx.Response:
        if advance and not self._finished(prediction):
            prediction.polls += 1
        state = self._status(prediction)
        started = prediction.created + timedelta(seconds=1 + prediction.cold)
        body: dict[str, Any] = {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version,
            "input": prediction.input,
            "logs": self._logs(prediction, state),
            "output": None,
            "data_removed": False,
            "error": None,
            "status": state,
            "created_at": _iso(prediction.created),
            "urls": dict(prediction.urls),
            "metrics": {},
        }
        # Replicate's spec types started_at/completed_at as timestamps, never null: they
        # are absent until the prediction starts / ends.
        if state != "starting":
            body["started_at"] = _iso(started)
        if state in _TERMINAL:
            ended = started + timedelta(seconds=max(prediction.steps, 1))
            body["completed_at"] = _iso(ended)
            body["metrics"] = {
                "predict_time": float(max(prediction.steps, 1)),
                "total_time": (ended - prediction.created).total_seconds(),
            }
        if state == "succeeded":
            if not prediction.done:
                prediction.output = self._output(prediction)
                prediction.done = True
            body["output"] = prediction.output
        elif state == "failed":
            body["error"] = prediction.fail
        elif state == "processing" and MODELS[prediction.model].kind != "image":
            body["output"] = self._partial(prediction)
        return httpx.Response(status, json=body)

    def _logs(self, prediction: _Prediction, state: str) -> str:
        if state == "starting":
            return ""
        seed = self._seed(prediction)
        lines = [f"Using seed: {seed}"]
        steps = max(prediction.steps, 1)
        # The steps that ran: all of them when it finished, those before the cancel when it
        # was cancelled (never the whole schedule: a stuck one can have millions).
        ran = max(prediction.polls - prediction.cold, 0)
        done = steps if state in ("succeeded", "failed") else ran
        for step in range(1, min(done, steps) + 1):
            percent = step * 100 // steps
            bar = ("█" * (percent // 10)).ljust(10)
            lines.append(f"{percent:3d}%|{bar}| {step}/{steps} [00:0{step}<00:00,  1.00it/s]")
        if state == "failed":
            lines.append(f"Error: {prediction.fail}")
        return "\n".join(lines)

    def _seed(self, prediction: _Prediction) -> int:
        seed = prediction.input.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
        return int(digest("replicate-seed", prediction.id)[:8], 16)

    # outputs --------------------------------------------------------------------------------
    def _text(self, prediction: _Prediction) -> list[str]:
        model = MODELS[prediction.model]
        if prediction.empty:
            return []
        prompt = str(prediction.input.get("prompt", ""))
        if model.kind == "vision":
            return _tokens(self._describe(prediction))
        tokens = _tokens(story_text(prompt, sentences=4, model=prediction.model))
        limit = prediction.input.get("max_tokens", prediction.input.get("max_new_tokens"))
        if isinstance(limit, int) and limit > 0:
            tokens = tokens[:limit]
        return tokens

    def _partial(self, prediction: _Prediction) -> list[str]:
        tokens = self._text(prediction)
        share = max(prediction.polls - prediction.cold, 0) / max(prediction.steps, 1)
        return tokens[: int(len(tokens) * share)]

    def _image(self, inputs: dict[str, Any]) -> bytes | None:
        value = inputs.get("image")
        if not isinstance(value, str):
            return None
        if value.startswith("data:"):
            payload = value.partition(",")[2]
            try:
                raw = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return None
        else:
            served = self.sim.state("download").get(value)
            if not isinstance(served, httpx.Response):
                return None
            raw = served.content
        return raw if describe_image(raw)["caption"] != "an unreadable image" else None

    def _describe(self, prediction: _Prediction) -> str:
        raw = self._image(prediction.input) or b""
        prompt = str(prediction.input.get("prompt", ""))
        if "json" in prompt.lower():
            return json.dumps(analysis_answer(raw))
        return describe_text(describe_image(raw))

    def _output(self, prediction: _Prediction) -> Any:
        model = MODELS[prediction.model]
        if prediction.empty:  # succeeded, but nothing came out (e.g. every image dropped)
            return None if model.single_url else []
        if model.kind != "image":
            return self._text(prediction)
        inputs = prediction.input
        default = model.inputs.get("output_format", {}).get("default", "png")
        fmt = str(inputs.get("output_format", default))
        width, height = self._size(prediction.model, inputs)
        count = int(inputs.get("num_outputs", 1))
        seed = self._seed(prediction)
        urls = []
        for index in range(1 if model.single_url else count):
            raw = image_bytes(
                f"{inputs.get('prompt', '')}|{seed + index}",
                *self.sim.drawn_size(width, height),
                {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}[fmt],
            )
            folder = digest("replicate-file", prediction.id, str(index))[:44]
            name = "output" if model.single_url else f"out-{index}"
            url = f"{_DELIVERY}/xezq/{folder}/{name}.{fmt}"
            kind = {"jpg": "image/jpeg"}.get(fmt, f"image/{fmt}")
            self.sim.serve_download(
                url,
                httpx.Response(
                    200,
                    content=raw,
                    headers={"content-type": kind, "content-length": str(len(raw))},
                ),
            )
            urls.append(url)
        return urls[0] if model.single_url else urls

    @staticmethod
    def _size(model: str, inputs: dict[str, Any]) -> tuple[int, int]:
        if model == "stability-ai/sdxl" or inputs.get("aspect_ratio") == "custom":
            return int(inputs.get("width", 1024)), int(inputs.get("height", 1024))
        w, h = (int(v) for v in str(inputs.get("aspect_ratio", "1:1")).split(":"))
        megapixels = 0.25 if inputs.get("megapixels") == "0.25" else 1.0
        scale = (megapixels * 1024 * 1024 / (w * h)) ** 0.5
        return int(w * scale) // 16 * 16, int(h * scale) // 16 * 16

    # models ---------------------------------------------------------------------------------
    def _schema(self, model: _Model) -> dict[str, Any]:
        properties = {
            name: {"title": name.replace("_", " ").title(), "x-order": index, **spec}
            for index, (name, spec) in enumerate(model.inputs.items())
        }
        if model.kind == "image":
            output: dict[str, Any] = (
                {"type": "string", "format": "uri", "title": "Output"}
                if model.single_url
                else {"type": "array", "items": {"type": "string", "format": "uri"},
                      "title": "Output"}
            )  # fmt: skip
        else:
            output = {
                "type": "array",
                "items": {"type": "string"},
                "title": "Output",
                "x-cog-array-type": "iterator",
                "x-cog-array-display": "concatenate",
            }
        return {
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "paths": {},
            "components": {
                "schemas": {
                    "Input": {
                        "type": "object",
                        "title": "Input",
                        "required": list(model.required),
                        "properties": properties,
                    },
                    "Output": output,
                }
            },
        }

    def _version_body(self, model: _Model) -> dict[str, Any]:
        return {
            "id": model.version,
            "created_at": "2024-04-17T21:08:00.000000Z",
            "cog_version": "0.9.6",
            "openapi_schema": self._schema(model),
        }

    def _version(self, name: str, version: str) -> httpx.Response:
        model = MODELS.get(name)
        if model is None or model.version != version:
            return self._not_found()
        return httpx.Response(200, json=self._version_body(model))

    def _model(self, name: str) -> httpx.Response:
        model = MODELS.get(name)
        if model is None:
            return self._not_found()
        owner, short = name.split("/")
        return httpx.Response(
            200,
            json={
                "url": f"https://replicate.com/{name}",
                "owner": owner,
                "name": short,
                "description": model.description,
                "visibility": "public",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": int(digest("runs", name)[:6], 16),
                "cover_image_url": None,
                "default_example": None,
                "latest_version": self._version_body(model),
                "is_official": model.official,
            },
        )


FAKE = ReplicateFake
