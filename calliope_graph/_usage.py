"""One provider call as the trace, the cost and telemetry see it: :class:`ProviderCall`.

The engine layer (:func:`calliope_graph.engines._http.with_retries`) opens one record per
request it sends to a provider (job-status polls and downloads excepted: they are not what a
provider bills), and the engines say what the provider's answer reported with
:func:`report_usage` — tokens, images, seconds of audio or video, characters. The runner
then prices each record (:mod:`calliope_graph._pricing`) from what was reported, estimating
only the figures the provider did not report, and the record says which was which. The
trace (``NodeExecution.provider_calls``), the HTML report, the batch cost and the
OpenTelemetry span of the call all read these records: one source of truth.

A record holds figures and names only — never a prompt, a key or media bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FIGURES",
    "ProviderCall",
    "current_call",
    "report_usage",
    "usage_from_body",
]

#: The usage figures a record may carry (what the catalog's prices are per).
FIGURES = (
    "input_tokens",
    "output_tokens",
    "text_input_tokens",
    "image_input_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "images",
    "video_seconds",
    "audio_seconds",
    "characters",
)


class ProviderCall(BaseModel):
    """One request to a provider within a node execution (its retries are records too)."""

    model_config = ConfigDict(extra="ignore")

    provider: str
    model: str | None = None
    """The model requested (the provider's own name for it where the engine knows it)."""
    response_model: str | None = None
    """The model the provider says answered (``model`` in its answer), when it says."""
    operation: str | None = None
    """What was asked, named in the spirit of OpenTelemetry's ``gen_ai.operation.name``:
    ``chat``, ``image_generation``, ``video_generation``, ``speech_generation``,
    ``transcription``, ``image_analysis`` (see docs/architecture.md, "Telemetry")."""
    started_at: float
    ended_at: float | None = None
    status: Literal["ok", "error"] = "ok"
    error_class: str | None = None
    """The taxonomy class of a failed request (``rate_limit``, ``transient``, ...)."""
    usage: dict[str, float] = Field(default_factory=dict)
    """Figures (see :data:`FIGURES`): reported by the provider or estimated."""
    reported: list[str] = Field(default_factory=list)
    """The figures of ``usage`` the provider's answer reported."""
    estimated: list[str] = Field(default_factory=list)
    """The figures of ``usage`` estimated here (characters / 4, the requested duration)."""
    cost_usd: float | None = None
    """What this request cost at list price; None when its model has no price."""
    cost_source: Literal["provider", "local"] = "local"
    """``local``: computed here from the catalog's prices (no provider reports a price)."""

    @property
    def duration(self) -> float:
        return 0.0 if self.ended_at is None else max(self.ended_at - self.started_at, 0.0)


#: The record of the request in progress (set by ``with_retries`` around each attempt).
current_call: ContextVar[ProviderCall | None] = ContextVar("calliope_current_call", default=None)


def report_usage(*, response_model: str | None = None, **figures: float | int | None) -> None:
    """Record what the provider's answer reported on the request in progress (figures that
    are None are skipped; figures not in :data:`FIGURES` are refused)."""
    call = current_call.get()
    if call is None:
        return
    for name, value in figures.items():
        if name not in FIGURES:
            raise ValueError(f"unknown usage figure {name!r}; expected one of {FIGURES}")
        if value is None or isinstance(value, bool):
            continue
        call.usage[name] = float(value)
        if name not in call.reported:
            call.reported.append(name)
    if response_model:
        call.response_model = response_model


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _images(data: Any) -> int | None:
    """The images an OpenAI Images answer holds (each as a file or a link), if it is one."""
    if not isinstance(data, list) or not all(isinstance(d, Mapping) for d in data):
        return None
    return len(data) if any("b64_json" in d or "url" in d for d in data) else None


def usage_from_body(body: Any) -> None:
    """Record the usage a provider's JSON answer reports, in the shapes providers use.

    - ``usage.prompt_tokens`` / ``completion_tokens`` — OpenAI Chat Completions
      (https://platform.openai.com/docs/api-reference/chat/object, ``usage``);
    - ``usage.input_tokens`` / ``output_tokens`` — Anthropic Messages
      (https://docs.anthropic.com/en/api/messages, ``usage``), OpenAI Images for GPT Image
      models with ``input_tokens_details.{text,image}_tokens``
      (https://platform.openai.com/docs/api-reference/images/object, ``usage``) and OpenAI
      transcriptions (``usage.type: tokens``, ``input_token_details.audio_tokens``);
    - ``usage.seconds`` (``usage.type: duration``) — OpenAI transcriptions billed by audio
      length (https://platform.openai.com/docs/api-reference/audio/json-object);
    - ``data: [...]`` — OpenAI Images: one entry per image generated;
    - ``model`` — the model that answered (OpenAI, Anthropic);
    - ``usageMetadata`` and ``modelVersion`` — the Gemini API (:func:`_gemini_usage`).
    """
    if current_call.get() is None or not isinstance(body, Mapping):
        return
    if isinstance(body.get("usageMetadata"), Mapping):
        _gemini_usage(body)
        return
    usage = body.get("usage")
    figures: dict[str, float | int | None] = {}
    if isinstance(usage, Mapping):
        figures["input_tokens"] = _int(usage.get("prompt_tokens"))
        figures["output_tokens"] = _int(usage.get("completion_tokens"))
        if figures["input_tokens"] is None:
            figures["input_tokens"] = _int(usage.get("input_tokens"))
        if figures["output_tokens"] is None:
            figures["output_tokens"] = _int(usage.get("output_tokens"))
        details = usage.get("input_tokens_details") or usage.get("input_token_details")
        if isinstance(details, Mapping):
            figures["text_input_tokens"] = _int(details.get("text_tokens"))
            figures["image_input_tokens"] = _int(details.get("image_tokens"))
            figures["audio_input_tokens"] = _int(details.get("audio_tokens"))
        if usage.get("type") == "duration" and isinstance(usage.get("seconds"), int | float):
            figures["audio_seconds"] = float(usage["seconds"])
    figures["images"] = _images(body.get("data"))
    model = body.get("model")
    report_usage(response_model=model if isinstance(model, str) else None, **figures)


#: Gemini's modalities (``ModalityTokenCount.modality``) → the per-modality input figures.
_GEMINI_INPUT = {
    "TEXT": "text_input_tokens",
    "IMAGE": "image_input_tokens",
    "AUDIO": "audio_input_tokens",
}


def _gemini_usage(body: Mapping[str, Any]) -> None:
    """The usage a Gemini API answer reports (https://ai.google.dev/api/generate-content,
    ``UsageMetadata``): ``promptTokenCount`` is the input; the output is
    ``candidatesTokenCount`` plus ``thoughtsTokenCount``, since thinking tokens are billed as
    output (https://ai.google.dev/gemini-api/docs/pricing, "Output price (including thinking
    tokens)"); ``promptTokensDetails`` / ``candidatesTokensDetails`` split them by modality;
    ``modelVersion`` names the model that answered."""
    meta = body["usageMetadata"]
    figures: dict[str, float | int | None] = {"input_tokens": _int(meta.get("promptTokenCount"))}
    answered = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    if answered is not None or thoughts is not None:
        figures["output_tokens"] = (answered or 0) + (thoughts or 0)
    for details, names in (
        (meta.get("promptTokensDetails"), _GEMINI_INPUT),
        (meta.get("candidatesTokensDetails"), {"AUDIO": "audio_output_tokens"}),
    ):
        for detail in details if isinstance(details, list) else []:
            if isinstance(detail, Mapping) and detail.get("modality") in names:
                name = names[detail["modality"]]
                count = _int(detail.get("tokenCount"))
                if count is not None:
                    figures[name] = int(figures.get(name) or 0) + count
    model = body.get("modelVersion")
    report_usage(response_model=model if isinstance(model, str) else None, **figures)
