"""The Gemini API fake's tables: models, request fields, ratios, voices, patterns.

Split out of :mod:`calliope_graph.simulate.google` (to keep modules under 600 lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

HOST = "generativelanguage.googleapis.com"
_ORIGIN = f"https://{HOST}"
_VERSION = "v1beta"
_RATE_LIMITS = "https://ai.google.dev/gemini-api/docs/rate-limits"
_GENERATE = ("generateContent", "streamGenerateContent", "countTokens")


@dataclass(frozen=True)
class _Model:
    """A model the fake serves: its kind (what it answers), methods, token limits and the
    day Google shuts it down (None: none announced)."""

    kind: str  # text | image | speech | imagen | veo
    display: str
    methods: tuple[str, ...] = _GENERATE
    input_limit: int = 1_048_576
    output_limit: int = 65_536
    shutdown: date | None = None


#: The models served, as Google lists them (ai.google.dev/gemini-api/docs/models and
#: /deprecations, read 2026-12-06). Past ``shutdown`` (on ``sim.wall_clock``) a model is
#: refused with Google's 404, like one that never existed.
MODELS: dict[str, _Model] = {
    "gemini-3.8-flash": _Model("text", "Gemini 3.8 Flash"),
    "gemini-3.5-flash": _Model("text", "Gemini 3.5 Flash"),
    "gemini-3.5-flash-lite": _Model("text", "Gemini 3.5 Flash-Lite"),
    "gemini-3.1-flash-lite": _Model("text", "Gemini 3.1 Flash-Lite", shutdown=date(2027, 5, 7)),
    "gemini-3.1-pro-preview": _Model("text", "Gemini 3.1 Pro Preview"),
    "gemini-3.1-flash-image": _Model("image", "Gemini 3.1 Flash Image", output_limit=32_768),
    "gemini-3-pro-image": _Model("image", "Gemini 3 Pro Image", output_limit=32_768),
    "gemini-3.8-flash-tts": _Model(
        "speech", "Gemini 3.8 Flash TTS", input_limit=8_192, output_limit=16_384
    ),
    "gemini-3.1-flash-tts-preview": _Model(
        "speech", "Gemini 3.1 Flash TTS Preview", input_limit=8_192, output_limit=16_384
    ),
    "veo-3.1-generate-preview": _Model(
        "veo", "Veo 3.1", methods=("predictLongRunning",), input_limit=1_024, output_limit=1
    ),
    "veo-3.1-fast-generate-preview": _Model(
        "veo", "Veo 3.1 Fast", methods=("predictLongRunning",), input_limit=1_024, output_limit=1
    ),
    # Shut down (kept so the fake refuses them the way Google does, and serves them when the
    # simulator's clock is set before the date).
    "gemini-2.5-flash": _Model("text", "Gemini 2.5 Flash", shutdown=date(2026, 6, 17)),
    "gemini-2.5-pro": _Model("text", "Gemini 2.5 Pro", shutdown=date(2026, 6, 17)),
    "gemini-2.5-flash-image": _Model("image", "Nano Banana", shutdown=date(2026, 10, 2)),
    "imagen-4.0-generate-001": _Model(
        "imagen",
        "Imagen 4",
        methods=("predict",),
        input_limit=480,
        output_limit=8192,
        shutdown=date(2026, 8, 17),
    ),
    "imagen-4.0-fast-generate-001": _Model(
        "imagen",
        "Imagen 4 Fast",
        methods=("predict",),
        input_limit=480,
        output_limit=8192,
        shutdown=date(2026, 8, 17),
    ),
}
#: ``generationConfig`` fields the API knows (ai.google.dev/api/generate-content).
_GENERATION_FIELDS = frozenset(
    [
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "_responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "speechConfig",
        "thinkingConfig",
        "imageConfig",
        "mediaResolution",
    ]
)
_REQUEST_FIELDS = frozenset(
    [
        "model",
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
    ]
)
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_IMAGE_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
_IMAGEN_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}
_VOICES = frozenset(
    [
        "Zephyr",
        "Puck",
        "Charon",
        "Kore",
        "Fenrir",
        "Leda",
        "Orus",
        "Aoede",
        "Callirrhoe",
        "Autonoe",
        "Enceladus",
        "Iapetus",
        "Umbriel",
        "Algieba",
        "Despina",
        "Erinome",
        "Algenib",
        "Rasalgethi",
        "Laomedeia",
        "Achernar",
        "Alnilam",
        "Schedar",
        "Gacrux",
        "Pulcherrima",
        "Achird",
        "Zubenelgenubi",
        "Vindemiatrix",
        "Sadachbia",
        "Sadaltager",
        "Sulafat",
    ]
)
_SPEECH_RATE = 24_000
_SPEECH_MIME = f"audio/L16;codec=pcm;rate={_SPEECH_RATE}"
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: Both API versions are served (Google's SDK 3.x calls v1 by default; this engine v1beta).
_V = r"/v1(?:beta)?"
_PATH = re.compile(rf"{_V}/models/(?P<model>[^/:]+)(?::(?P<method>\w+))?")
_OPERATION = re.compile(rf"{_V}/models/(?P<model>[^/:]+)/operations/(?P<id>[\w-]+)")
_FILE = re.compile(rf"{_V}/files/(?P<id>[\w-]+)(?::download)?")
_MODELS = re.compile(rf"{_V}/models")


@dataclass
class _Operation:
    id: str
    model: str
    prompt: str
    image: bytes | None
    ratio: str
    seconds: int
    blocked: bool
    emptied: bool
    polls: int = 0
    uri: str = ""


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)
