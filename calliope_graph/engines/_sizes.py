"""What image sizes a model can make: refused at validation, warned about at run time.

A text-to-image node's ``width`` x ``height`` reach a provider in its own terms — an exact
size from a short list (OpenAI's image models), an aspect ratio at the model's own
resolution (Stability's v2beta, Google, Luma, FLUX on Replicate), sides rounded to a multiple
of 8 or 64 (Hugging Face, Stability v1). A size the model cannot make must not be changed
silently:

- **at validation** (no engine module loaded): a model that makes only a fixed list of sizes
  refuses any other, naming the list and the nearest (:func:`size_problem`; the table is
  here, and the OpenAI engine maps with it);
- **at run time** (the node, after the engine answered): an image of another size than asked
  is logged as a warning naming what was asked, what came back and what the model makes
  (:func:`sizes_made`, which reads the engine module's own table — it is loaded by then).
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING

from calliope_graph._providers import InferenceModelProvider

if TYPE_CHECKING:
    from calliope_graph.config import ModelConfig

__all__ = [
    "FIXED_SIZES",
    "fixed_sizes",
    "nearest_size",
    "size_family",
    "size_problem",
    "sizes_made",
]

Size = tuple[int, int]

#: Sizes each OpenAI image model accepts (PROVIDERS.md §1.3), by family.
FIXED_SIZES: dict[str, tuple[Size, ...]] = {
    "dall-e-2": ((256, 256), (512, 512), (1024, 1024)),
    "dall-e-3": ((1024, 1024), (1792, 1024), (1024, 1792)),
    "gpt-image": ((1024, 1024), (1536, 1024), (1024, 1536)),
}


def size_family(model: str) -> str | None:
    """The :data:`FIXED_SIZES` family of an OpenAI image model (None: sizes as asked)."""
    if model in ("dall-e-2", "dall-e-3"):
        return model
    if model.startswith("gpt-image"):
        return "gpt-image"
    return None


def fixed_sizes(config: ModelConfig) -> tuple[Size, ...] | None:
    """The only sizes ``config``'s model makes, when it makes a fixed list (else None)."""
    if config.provider is not InferenceModelProvider.OPENAI:
        return None
    family = size_family(config.model.provider_model_name)
    return FIXED_SIZES[family] if family is not None else None


def _wanted(width: int | None, height: int | None) -> Size | None:
    if not width and not height:
        return None
    return (width or height or 1024), (height or width or 1024)


def nearest_size(sizes: tuple[Size, ...], width: int | None, height: int | None) -> Size:
    """The size of ``sizes`` nearest ``width`` x ``height`` in shape first, then in area."""
    w, h = _wanted(width, height) or (1024, 1024)

    def distance(size: Size) -> float:
        shape = abs(math.log((size[0] / size[1]) / (w / h)))
        area = abs(math.log((size[0] * size[1]) / (w * h)))
        return shape * 4 + area

    return min(sizes, key=distance)


def _listed(sizes: tuple[Size, ...]) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sizes)


def size_problem(config: ModelConfig, width: int | None, height: int | None) -> str | None:
    """Why ``config``'s model cannot make ``width`` x ``height`` and what to set instead
    (None: it can, or it maps sizes in a way only the answer shows)."""
    sizes = fixed_sizes(config)
    wanted = _wanted(width, height)
    if sizes is None or wanted is None or wanted in sizes:
        return None
    near = nearest_size(sizes, width, height)
    return (
        f"model {config.slug!r} ({config.provider.value} {config.model.provider_model_name}) "
        f"makes only {_listed(sizes)}, not {wanted[0]}x{wanted[1]}: set width and height to "
        f"one of those (nearest: width: {near[0]}, height: {near[1]}), or leave them out for "
        "its default"
    )


def _ratios(module: str, name: str) -> tuple[str, ...]:
    found = getattr(importlib.import_module(f"calliope_graph.engines.{module}"), name, ())
    return tuple(found)


def sizes_made(config: ModelConfig) -> str:
    """What ``config``'s model makes, in words (for a warning at run time; reads the tables
    of the provider's engine module, loaded once its engine has run)."""
    sizes = fixed_sizes(config)
    if sizes is not None:
        return f"only {_listed(sizes)}"
    provider, model = config.provider, config.model.provider_model_name
    ratios: tuple[str, ...] = ()
    if provider is InferenceModelProvider.STABILITY:
        ratios = _ratios("stability", "ASPECT_RATIOS")
    elif provider is InferenceModelProvider.LUMA:
        ratios = _ratios("luma", "ASPECT_RATIOS")
    elif provider is InferenceModelProvider.GOOGLE:
        name = "IMAGEN_RATIOS" if model.startswith("imagen-") else "GEMINI_RATIOS"
        ratios = _ratios("_google_media", name)
    elif provider is InferenceModelProvider.REPLICATE:
        table = importlib.import_module("calliope_graph.engines.replicate").IMAGE_MODELS
        ratios = tuple(table.get(model) or ())
    elif provider is InferenceModelProvider.HUGGINGFACE:
        return "sides in multiples of 8 (the asked sides are rounded)"
    if ratios:
        return f"the aspect ratios {', '.join(ratios)} at its own resolution"
    return "sizes of its own choosing"
