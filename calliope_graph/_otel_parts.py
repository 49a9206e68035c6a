"""What a span says of a node's prompts and outputs when content capture is on
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``): GenAI message parts of the
trace's redacted summaries — text, media as ``uri`` parts naming the file's path; no data URL,
no run of base64 (:mod:`calliope_graph._otel`)."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["messages"]

_BASE64 = re.compile(r"[A-Za-z0-9+/=_-]{200,}")


def _clean(text: str) -> str:
    """Text fit for telemetry: no data URL, no run of base64."""
    if text.startswith("data:"):
        return "[data URL omitted]"
    return _BASE64.sub("[base64 omitted]", text)


def _parts(values: dict[str, Any]) -> list[dict[str, Any]]:
    """GenAI message parts of trace summaries: text parts, media as ``uri`` parts."""
    parts: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append({"type": "text", "content": _clean(value)})
        elif isinstance(value, dict):
            kind = value.get("type")
            if kind in ("image", "audio", "video") and "path" in value:
                part = {"type": "uri", "modality": kind, "uri": str(value["path"])}
                if value.get("mime"):
                    part["mime_type"] = str(value["mime"])
                parts.append(part)
            elif kind == "bytes":
                return
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, int | float | bool):
            parts.append({"type": "text", "content": str(value)})

    walk(values)
    return parts


def messages(role: str, values: dict[str, Any]) -> str:
    return json.dumps([{"role": role, "parts": _parts(values)}], ensure_ascii=False)
