"""The providers calliope-graph knows, by the one name each goes by everywhere.

Exported as :class:`calliope_graph.config.InferenceModelProvider`; it lives in this leaf module
so that both ``config`` (model configs) and ``limits`` (whose limit keys name providers) can
import it without importing each other (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["InferenceModelProvider"]


class InferenceModelProvider(StrEnum):
    OPENAI = "openai"
    AZURE = "azure_vision"
    STABILITY = "stability"
    REPLICATE = "replicate"
    HUGGINGFACE = "hugging_face"
    RUNWAY = "runway"
    ANTHROPIC = "anthropic"
    ELEVENLABS = "elevenlabs"
    GOOGLE = "google"
    FAL = "fal"
    LUMA = "luma"
    LANGCHAIN = "langchain"

    @classmethod
    def _missing_(cls, value: object) -> InferenceModelProvider | None:
        """Earlier names still read: ``azure`` is ``azure_vision``, ``huggingface`` (and
        ``hf``) is ``hugging_face`` — one name per provider across config, engines, fakes."""
        aliases = {"azure": "azure_vision", "huggingface": "hugging_face", "hf": "hugging_face"}
        if isinstance(value, str) and value.lower() in aliases:
            return cls(aliases[value.lower()])
        return None
