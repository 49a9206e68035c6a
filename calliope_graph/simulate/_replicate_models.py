"""The models Replicate's fake serves (versions, input schemas, outputs), and the endpoints
that describe them: Replicate's error envelope, ``GET /v1/models/{owner}/{name}`` and its
versions (:class:`ReplicateModelsAPI`, which :class:`~.replicate.ReplicateFake` extends)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from calliope_graph.simulate._content import digest
from calliope_graph.simulate._core import (
    Failure,
    ProviderFake,
)

__all__ = ["MODELS", "ReplicateModelsAPI"]

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


class ReplicateModelsAPI(ProviderFake):
    """Replicate's error envelope and model endpoints (what a model and its versions look like)."""

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

    def _not_found(self) -> httpx.Response:
        return self._problem(404, "The requested resource could not be found.")

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
