"""Provider engines: one module per provider, looked up by (conversion, provider)."""

from calliope_graph.engines._registry import (
    AudioToTextEngine,
    Conversion,
    ImageAnalysisEngine,
    ImageAndTextToVideoEngine,
    MessagesToObjectEngine,
    TextToImageEngine,
    TextToSpeechEngine,
    TextToTextEngine,
    get_engine,
    register,
    supported,
    supports,
)

__all__ = [
    "AudioToTextEngine",
    "Conversion",
    "ImageAnalysisEngine",
    "ImageAndTextToVideoEngine",
    "MessagesToObjectEngine",
    "TextToImageEngine",
    "TextToSpeechEngine",
    "TextToTextEngine",
    "get_engine",
    "register",
    "supported",
    "supports",
]
