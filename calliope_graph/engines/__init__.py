"""Provider engines: one module per provider, looked up by (conversion, provider)."""

from typing import TYPE_CHECKING

from calliope_graph._lazy import exports

# Loaded on first use (calliope_graph/_lazy.py); each provider's module loads when one of
# its engines is looked up.
if TYPE_CHECKING:
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
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.engines._registry": [
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
            ],
        },
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
