"""What each provider call cost, at the catalog's list prices (``config.ModelPrice``).

The runner calls :func:`settle` when a node execution that called a provider ends. Each
request that succeeded is priced from the usage its provider reported
(:mod:`calliope_graph._usage`); a figure the provider did not report is estimated from the
execution — tokens as characters / 4 of its text inputs and outputs, images by its image
outputs, seconds of video by the videos' own length (else the ``duration`` parameter, else
5 s), minutes of audio by the audio it read (transcription) or made (speech) — and put on
the execution's last successful request, listed in its ``estimated``. Failed requests cost
nothing (providers do not bill them). ``per_request`` prices each execution once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from calliope_graph._usage import ProviderCall

if TYPE_CHECKING:
    from calliope_graph.config import ModelConfig, ModelPrice
    from calliope_graph.flow.trace import NodeExecution

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_VIDEO_SECONDS",
    "call_cost",
    "estimate_figures",
    "operation_of",
    "settle",
]

#: Characters per token, for estimates (English text with common tokenizers).
CHARS_PER_TOKEN = 4.0
#: Seconds of video a generation is assumed to make without a ``duration`` parameter.
DEFAULT_VIDEO_SECONDS = 5.0

#: Node kind → the operation its provider call performs, named as OpenTelemetry's GenAI
#: conventions name operations (``chat`` is theirs; they name no media generation yet, so
#: the others follow their ``<noun>_<verb>`` spirit: docs/architecture.md, "Telemetry").
_OPERATIONS = {
    "text_to_text": "chat",
    "classify": "chat",
    "messages_to_object": "chat",
    "censor_text": "chat",
    "switch": "chat",
    "text_to_image": "image_generation",
    "image_and_text_to_video": "video_generation",
    "text_to_speech": "speech_generation",
    "audio_to_text": "transcription",
    "analyze_image": "image_analysis",
}


#: Providers whose text calls the conventions name otherwise than ``chat``: the Gemini API's
#: ``generateContent`` is their ``generate_content`` ("Multimodal content generation
#: operation such as Gemini Generate Content": open-telemetry/semantic-conventions,
#: model/gen-ai/registry.yaml, ``gen_ai.operation.name``; instrumentations SHOULD use the
#: predefined value that applies).
_CHAT_OPERATION = {"google": "generate_content"}


def operation_of(kind: str, provider: str | None = None) -> str:
    """The operation name of a provider call made by a node of ``kind`` to ``provider``."""
    operation = _OPERATIONS.get(kind, "generate_content")
    if operation == "chat" and provider is not None:
        return _CHAT_OPERATION.get(provider, operation)
    return operation


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        if value.get("type") in ("image", "audio", "video"):
            return
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v)


def media_of(values: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The media summaries of ``kind`` (``image``, ...) anywhere in trace values."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == kind:
                found.append(value)
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(values)
    return found


def _tokens(values: dict[str, Any]) -> float:
    return sum(len(t) for t in _texts(values)) / CHARS_PER_TOKEN


def _seconds(media: dict[str, Any]) -> float | None:
    value = media.get("duration", media.get("duration_s"))
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _duration(value: Any) -> float | None:
    """A ``duration`` parameter in seconds: a number, or text such as ``"5"`` / ``"5s"``
    (Luma's and Runway's spellings); None when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", str(value or ""))
    return float(found[1]) if found and float(found[1]) > 0 else None


def image_price_of(
    price: ModelPrice, config: ModelConfig, outputs: dict[str, Any], params: dict[str, Any]
) -> float:
    merged = {**config.parameters, **params}
    size = merged.get("size")
    if params.get("width") and params.get("height"):
        size = f"{params['width']}x{params['height']}"
    if not size:
        for image in media_of(outputs, "image"):
            if image.get("width"):
                size = f"{image.get('width')}x{image.get('height')}"
                break
    quality = merged.get("quality")
    return price.image(str(size) if size else None, str(quality) if quality else None) or 0.0


def estimate_figures(
    price: ModelPrice,
    config: ModelConfig,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, float]:
    """The usage figures ``price`` bills by, estimated from an execution's summaries."""
    figures: dict[str, float] = {}
    if price.input_per_1k_tokens:
        figures["input_tokens"] = round(_tokens(inputs))
    if price.output_per_1k_tokens:
        figures["output_tokens"] = round(_tokens(outputs))
    if price.per_image is not None:
        figures["images"] = float(len(media_of(outputs, "image")))
    if price.per_video_second:
        asked = params.get("duration") or config.parameters.get("duration")
        default = _duration(asked) or DEFAULT_VIDEO_SECONDS
        videos = media_of(outputs, "video")
        figures["video_seconds"] = sum(_seconds(v) or default for v in videos)
    if price.per_audio_minute:
        audio = media_of(outputs, "audio") or media_of(inputs, "audio")  # speech, else STT
        figures["audio_seconds"] = sum(_seconds(a) or 60.0 for a in audio)
    return figures


def call_cost(
    usage: dict[str, float], price: ModelPrice, image_price: float, *, per_request: bool
) -> float:
    """USD of one request with ``usage`` at ``price``."""
    cost = (price.per_request or 0.0) if per_request else 0.0
    if price.input_per_1k_tokens:
        cost += usage.get("input_tokens", 0.0) / 1000 * price.input_per_1k_tokens
    if price.output_per_1k_tokens:
        cost += usage.get("output_tokens", 0.0) / 1000 * price.output_per_1k_tokens
    if price.per_image is not None:
        cost += usage.get("images", 0.0) * image_price
    if price.per_video_second:
        cost += usage.get("video_seconds", 0.0) * price.per_video_second
    if price.per_audio_minute:
        cost += usage.get("audio_seconds", 0.0) / 60.0 * price.per_audio_minute
    return round(cost, 8)


def settle(execution: NodeExecution, config: ModelConfig | None, calls: list[ProviderCall]) -> None:
    """Name, complete and price ``calls`` (the execution's provider requests), then set the
    execution's ``provider_calls`` and ``cost_usd`` (None when its model has no price)."""
    if not calls:
        return
    model = config.model.provider_model_name if config is not None else execution.model
    for call in calls:
        call.operation = call.operation or operation_of(execution.kind, call.provider)
        call.model = call.model or model
        if call.status != "ok":
            call.cost_usd = 0.0
    ok = [c for c in calls if c.status == "ok"]
    price = config.price if config is not None else None
    total: float | None = 0.0
    if ok:
        if price is None or config is None:
            for call in ok:
                call.cost_usd = None
            total = None
        else:
            estimated = estimate_figures(
                price, config, execution.inputs, execution.outputs, execution.params
            )
            reported = {f for c in ok for f in c.reported}
            last = ok[-1]
            for figure, value in estimated.items():
                if figure not in reported:
                    last.usage[figure] = value
                    last.estimated.append(figure)
            image_price = image_price_of(price, config, execution.outputs, execution.params)
            for call in ok:
                call.cost_usd = call_cost(call.usage, price, image_price, per_request=call is last)
            total = round(sum(c.cost_usd or 0.0 for c in ok), 8)
    execution.provider_calls = calls
    execution.cost_usd = total
