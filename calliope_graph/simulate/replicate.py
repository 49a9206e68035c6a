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
    Reject,
)
from calliope_graph.simulate._replicate_models import (
    _ALPHABET,
    _BODY_KEYS,
    _BY_VERSION,
    _DELIVERY,
    _TERMINAL,
    _UNAVAILABLE,
    API,
    MODELS,
    ReplicateModelsAPI,
    _iso,
    _Model,
    _Prediction,
    _tokens,
)

__all__ = ["FAKE", "MODELS", "ReplicateFake"]


class ReplicateFake(ReplicateModelsAPI):
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


FAKE = ReplicateFake
