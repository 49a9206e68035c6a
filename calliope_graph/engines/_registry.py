"""The engine registry: (conversion, provider) -> engine.

Engine modules register their functions with :func:`register`; nodes and the functional
API look them up with :func:`get_engine`. A miss is a :class:`ConfigurationError` that lists
the providers that *do* serve the conversion.

Which provider serves which conversion, from which engine module, is declared once as data
(:data:`PROVIDER_ENGINES`), so validating a flow, the support matrix and ``calliope-graph
models`` answer "who serves this conversion" without importing any engine (docs/architecture.md,
"Layers": start-up is lazy). A provider's engine modules load when one of its engines is
looked up, or when validation runs a check it declares. tests/test_provider_table.py imports
every engine module and compares what they register with the table, so the two cannot drift.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from pydantic import BaseModel

from calliope_graph.config import InferenceModelProvider, ModelConfig
from calliope_graph.errors import ConfigurationError

if TYPE_CHECKING:  # the engines' signatures only: none is needed to look an engine up
    from langchain_core.messages import BaseMessage

    from calliope_graph.context import RunContext
    from calliope_graph.media import Audio, Image, ImageAnalysis, Video

__all__ = [
    "CAPABILITY_PORTS",
    "PROVIDER_ENGINES",
    "AudioToTextEngine",
    "Conversion",
    "ImageAnalysisEngine",
    "ImageAndTextToVideoEngine",
    "MessagesToObjectEngine",
    "ProviderEngines",
    "TextToImageEngine",
    "TextToSpeechEngine",
    "TextToTextEngine",
    "config_problem",
    "get_engine",
    "markdown_matrix",
    "register",
    "register_check",
    "supported",
    "write_matrix",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class Conversion(StrEnum):
    TEXT_TO_TEXT = "text_to_text"
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_AND_TEXT_TO_VIDEO = "image_and_text_to_video"
    IMAGE_ANALYSIS = "image_analysis"
    AUDIO_TO_TEXT = "audio_to_text"
    MESSAGES_TO_OBJECT = "messages_to_object"
    TEXT_TO_SPEECH = "text_to_speech"


class TextToTextEngine(Protocol):
    async def __call__(self, ctx: RunContext, text: str, config: ModelConfig) -> str: ...


class TextToImageEngine(Protocol):
    async def __call__(
        self,
        ctx: RunContext,
        prompt: str,
        config: ModelConfig,
        *,
        output_name: str,
        width: int | None = None,
        height: int | None = None,
        reference_images: Sequence[Image] = (),
        seed: int | None = None,
    ) -> Image: ...


class ImageAndTextToVideoEngine(Protocol):
    async def __call__(
        self,
        ctx: RunContext,
        image: Image,
        text: str,
        config: ModelConfig,
        *,
        output_name: str,
        last_frame: Image | None = None,
        seed: int | None = None,
    ) -> Video: ...


class ImageAnalysisEngine(Protocol):
    async def __call__(
        self, ctx: RunContext, image: Image, config: ModelConfig
    ) -> ImageAnalysis: ...


class AudioToTextEngine(Protocol):
    async def __call__(
        self, ctx: RunContext, audio: Audio, config: ModelConfig, *, language: str | None = None
    ) -> str: ...


class MessagesToObjectEngine(Protocol):
    async def __call__(
        self,
        ctx: RunContext,
        messages: Sequence[BaseMessage],
        config: ModelConfig,
        response_model: type[ModelT],
    ) -> ModelT: ...


class TextToSpeechEngine(Protocol):
    async def __call__(
        self,
        ctx: RunContext,
        text: str,
        config: ModelConfig,
        *,
        output_name: str,
        voice: str | None = None,
    ) -> Audio: ...


@dataclass(frozen=True)
class ProviderEngines:
    """One provider's row of the provider table: the modules under ``calliope_graph.engines``
    that register its engines, the conversions they serve, and the conversions whose model
    configs an engine checks at validation (:func:`register_check`)."""

    modules: tuple[str, ...]
    serves: frozenset[Conversion]
    checks: frozenset[Conversion] = frozenset()


_P, _C = InferenceModelProvider, Conversion
_ALL_TEXT = (_C.TEXT_TO_TEXT, _C.IMAGE_ANALYSIS, _C.MESSAGES_TO_OBJECT)

#: The provider table (DESIGN.md, "One provider table"): who serves which conversion, from
#: which engine modules. Declared here so "who serves this" costs no import; kept equal to
#: what the modules register by tests/test_provider_table.py.
PROVIDER_ENGINES: dict[InferenceModelProvider, ProviderEngines] = {
    _P.OPENAI: ProviderEngines(
        ("openai", "openai_media"),
        frozenset(
            (*_ALL_TEXT, _C.TEXT_TO_IMAGE, _C.AUDIO_TO_TEXT, _C.TEXT_TO_SPEECH),
        ),
    ),
    _P.AZURE: ProviderEngines(("azure_vision",), frozenset((_C.IMAGE_ANALYSIS,))),
    _P.STABILITY: ProviderEngines(("stability",), frozenset((_C.TEXT_TO_IMAGE,))),
    _P.REPLICATE: ProviderEngines(
        ("replicate",), frozenset((_C.TEXT_TO_IMAGE, _C.TEXT_TO_TEXT, _C.IMAGE_ANALYSIS))
    ),
    _P.HUGGINGFACE: ProviderEngines(
        ("hugging_face",),
        frozenset((_C.AUDIO_TO_TEXT, _C.IMAGE_ANALYSIS, _C.TEXT_TO_IMAGE, _C.TEXT_TO_TEXT)),
    ),
    _P.RUNWAY: ProviderEngines(("runway",), frozenset((_C.IMAGE_AND_TEXT_TO_VIDEO,))),
    _P.ANTHROPIC: ProviderEngines(("anthropic",), frozenset(_ALL_TEXT)),
    _P.ELEVENLABS: ProviderEngines(("elevenlabs",), frozenset((_C.TEXT_TO_SPEECH,))),
    _P.GOOGLE: ProviderEngines(("google",), frozenset(Conversion)),
    _P.FAL: ProviderEngines(
        ("fal",),
        frozenset((_C.IMAGE_AND_TEXT_TO_VIDEO, _C.TEXT_TO_IMAGE)),
        checks=frozenset((_C.TEXT_TO_IMAGE,)),
    ),
    _P.LUMA: ProviderEngines(
        ("luma",),
        frozenset((_C.TEXT_TO_IMAGE, _C.IMAGE_AND_TEXT_TO_VIDEO)),
        checks=frozenset((_C.IMAGE_AND_TEXT_TO_VIDEO, _C.TEXT_TO_IMAGE)),
    ),
    _P.LANGCHAIN: ProviderEngines(("langchain",), frozenset(_ALL_TEXT)),
}

#: Modules under calliope_graph.engines that register engines when imported.
ENGINE_MODULES = tuple(m for row in PROVIDER_ENGINES.values() for m in row.modules)

_ENGINES: dict[tuple[Conversion, InferenceModelProvider], Callable[..., Awaitable[Any]]] = {}
#: The providers whose engine modules are imported.
_loaded: set[InferenceModelProvider] = set()


def register(conversion: Conversion, provider: InferenceModelProvider) -> Callable[[F], F]:
    """Decorator: make the function the engine for (conversion, provider)."""

    def deco(fn: F) -> F:
        _ENGINES[(conversion, provider)] = fn
        return fn

    return deco


#: A check of a model config and the node's wired input ports: what is wrong, or None.
ConfigCheck = Callable[[ModelConfig, frozenset[str]], str | None]
#: Checks an engine makes of a model config before anything runs (a flow's validation):
#: each returns what is wrong and how to fix it, or None.
_CHECKS: dict[tuple[Conversion, InferenceModelProvider], ConfigCheck] = {}


def register_check(
    conversion: Conversion, provider: InferenceModelProvider
) -> Callable[[ConfigCheck], ConfigCheck]:
    """Decorator: a check of (conversion, provider) model configs — given the node's wired
    input ports too — that validation runs, for what an engine needs that the config alone
    shows (Luma Ray, or Photon with reference images: a public image URL)."""

    def deco(fn: ConfigCheck) -> ConfigCheck:
        _CHECKS[(conversion, provider)] = fn
        return fn

    return deco


#: The optional ports a model must say it takes (catalog ``takes``) before one is wired to
#: it: the consistency ports, which each provider maps to its own request fields.
CAPABILITY_PORTS: dict[Conversion, tuple[str, ...]] = {
    Conversion.TEXT_TO_IMAGE: ("reference_images", "seed"),
    Conversion.IMAGE_AND_TEXT_TO_VIDEO: ("last_frame", "seed"),
}


def config_problem(
    conversion: Conversion,
    config: ModelConfig,
    *,
    wired: Iterable[str] = (),
    models: Iterable[tuple[str, ModelConfig]] | None = None,
) -> str | None:
    """What the engine for ``conversion`` says is wrong with ``config`` (None: nothing).

    ``wired`` names the node's wired input ports: a consistency port (``CAPABILITY_PORTS``)
    wired to a model whose catalog entry does not list it in ``takes`` is refused, naming
    the models of ``models`` (name, config; default the built-in catalog) that take it.
    Only a check the provider table declares loads an engine module: that provider's."""
    wired = frozenset(wired)
    for port in CAPABILITY_PORTS.get(conversion, ()):
        if port in wired and port not in config.model.takes:
            return _capability_problem(conversion, config, port, models)
    row = PROVIDER_ENGINES.get(config.provider)
    if row is not None and conversion in row.checks:
        _load(config.provider)
    check = _CHECKS.get((conversion, config.provider))
    return check(config, wired) if check is not None else None


def _capability_problem(
    conversion: Conversion,
    config: ModelConfig,
    port: str,
    models: Iterable[tuple[str, ModelConfig]] | None,
) -> str:
    if models is None:
        from calliope_graph.config import catalog

        models = ((name, catalog.get(name)) for name in catalog)
    able = sorted(
        name
        for name, other in models
        if port in other.model.takes and other.model.kind_problem(conversion.value) is None
    )
    listed = ", ".join(able) or "none in the catalog"
    return (
        f"model {config.slug!r} cannot take {port!r} (its catalog entry does not list it in "
        f"`takes`); models that can: {listed}. Choose one of them, or leave {port!r} unwired"
    )


def _load(provider: InferenceModelProvider) -> None:
    """Import ``provider``'s engine modules (they register its engines), once."""
    if provider in _loaded:
        return
    row = PROVIDER_ENGINES.get(provider)
    for name in row.modules if row is not None else ():
        importlib.import_module(f"calliope_graph.engines.{name}")
    _loaded.add(provider)


@overload
def get_engine(
    conversion: Literal[Conversion.TEXT_TO_TEXT], provider: InferenceModelProvider | str
) -> TextToTextEngine: ...
@overload
def get_engine(
    conversion: Literal[Conversion.TEXT_TO_IMAGE], provider: InferenceModelProvider | str
) -> TextToImageEngine: ...
@overload
def get_engine(
    conversion: Literal[Conversion.IMAGE_AND_TEXT_TO_VIDEO],
    provider: InferenceModelProvider | str,
) -> ImageAndTextToVideoEngine: ...
@overload
def get_engine(
    conversion: Literal[Conversion.IMAGE_ANALYSIS], provider: InferenceModelProvider | str
) -> ImageAnalysisEngine: ...
@overload
def get_engine(
    conversion: Literal[Conversion.AUDIO_TO_TEXT], provider: InferenceModelProvider | str
) -> AudioToTextEngine: ...
@overload
def get_engine(
    conversion: Literal[Conversion.MESSAGES_TO_OBJECT], provider: InferenceModelProvider | str
) -> MessagesToObjectEngine: ...
@overload
def get_engine(
    conversion: Literal[Conversion.TEXT_TO_SPEECH], provider: InferenceModelProvider | str
) -> TextToSpeechEngine: ...
@overload
def get_engine(
    conversion: Conversion, provider: InferenceModelProvider | str
) -> Callable[..., Awaitable[Any]]: ...
def get_engine(
    conversion: Conversion, provider: InferenceModelProvider | str
) -> Callable[..., Awaitable[Any]]:
    """The engine for (conversion, provider), or a ConfigurationError naming the options.
    Imports the provider's engine modules (only that provider's) the first time."""
    try:
        provider = InferenceModelProvider(provider)
    except ValueError:
        known = ", ".join(p.value for p in InferenceModelProvider)
        raise ConfigurationError(f"Unknown provider {provider!r}: use one of {known}.") from None
    _load(provider)
    engine = _ENGINES.get((conversion, provider))
    if engine is None:
        options = supported().get(conversion, [])
        listed = ", ".join(p.value for p in options) or "none yet"
        raise ConfigurationError(
            f"No {conversion.value} engine for provider {provider.value!r}. Providers that "
            f"serve {conversion.value}: {listed}. Choose a model config for one of them."
        )
    return engine


def supports(conversion: Conversion, provider: InferenceModelProvider | str) -> bool:
    """Whether ``provider`` serves ``conversion`` (the provider table, or an engine
    registered in this process); imports no engine."""
    try:
        provider = InferenceModelProvider(provider)
    except ValueError:
        return False
    row = PROVIDER_ENGINES.get(provider)
    return (row is not None and conversion in row.serves) or (conversion, provider) in _ENGINES


def supported() -> dict[Conversion, list[InferenceModelProvider]]:
    """Every conversion with the providers that serve it (in enum order): the provider
    table's, and any engine registered in this process. Imports no engine."""
    return {conv: [p for p in InferenceModelProvider if supports(conv, p)] for conv in Conversion}


#: Markers around the generated support matrix in README.md.
MATRIX_START = "<!-- matrix:start -->"
MATRIX_END = "<!-- matrix:end -->"


def markdown_matrix() -> str:
    """The support matrix as a Markdown table: conversions by providers, ✓ where served."""
    table = supported()
    providers = list(InferenceModelProvider)
    lines = [
        "| conversion | " + " | ".join(p.value for p in providers) + " |",
        "|---|" + "|".join(":-:" for _ in providers) + "|",
    ]
    for conv, served in table.items():
        cells = ["✓" if p in served else "" for p in providers]
        lines.append(f"| {conv.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def matrix_section(text: str) -> str | None:
    """What ``text`` holds between the matrix markers (None when they are missing)."""
    start, end = text.find(MATRIX_START), text.find(MATRIX_END)
    if start == -1 or end < start:
        return None
    return text[start + len(MATRIX_START) : end]


def write_matrix(text: str) -> str:
    """``text`` with the section between the matrix markers replaced by the current table."""
    start, end = text.find(MATRIX_START), text.find(MATRIX_END)
    if start == -1 or end < start:
        raise ConfigurationError(
            f"No {MATRIX_START} ... {MATRIX_END} section found: add both markers where the "
            "support matrix belongs."
        )
    body = (
        "\n<!-- generated by `python -m calliope_graph.engines --write-readme README.md`; "
        "do not edit by hand -->\n\n" + markdown_matrix() + "\n"
    )
    return text[: start + len(MATRIX_START)] + body + text[end:]
