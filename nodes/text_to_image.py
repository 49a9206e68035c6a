"""TextToImage: an image generator draws a prompt into a file in the media store."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext, streaming
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines._sizes import sizes_made
from calliope_graph.errors import ConfigurationError
from calliope_graph.media import Image
from calliope_graph.nodes._base import Node, Port, PortType, register_node

log = logging.getLogger("calliope_graph.nodes.text_to_image")


class TextToImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    width: int | None = Field(default=None, gt=0, le=8192, examples=[1024])
    """Width in pixels; a size the model cannot make is refused at validation (fixed-size
    models) or warned about (default: the model's own size)."""
    height: int | None = Field(default=None, gt=0, le=8192, examples=[1024])
    """Height in pixels (see ``width``)."""
    output_name: str | None = Field(default=None, examples=["picture.png"])
    """File name in the output directory (default: the node's name, with the real extension)."""
    previews: int = Field(default=0, ge=0, le=3, examples=[2])
    """Partial images to show while the model draws (0-3): OpenAI's GPT image models stream
    them when someone listens (``flow.astream``, ``calliope-graph run`` on a terminal), each
    saved as ``<name>-preview-<n>`` and reported as a ``preview`` event; other models and
    unstreamed runs ignore it (docs/architecture.md, "Partial images")."""


@register_node
class TextToImage(Node):
    kind = "text_to_image"
    description = "Generate an image from a text prompt"
    conversion = Conversion.TEXT_TO_IMAGE
    needs_model = True
    default_model = "openai-gpt-image-2"
    Params = TextToImageParams
    inputs = (
        Port("prompt", PortType.TEXT, description="what to draw"),
        Port(
            "reference_images",
            PortType.IMAGE,
            required=False,
            many=True,
            description="images to keep consistent with (a character sheet, a style): only "
            "for models whose catalog entry `takes` it",
        ),
        Port(
            "seed",
            PortType.ANY,
            required=False,
            description="an integer seed, for the same image again (models that `take` it)",
        ),
    )
    outputs = (Port("image", PortType.IMAGE),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.TEXT_TO_IMAGE, config.provider)
        extra: dict[str, Any] = {}
        references = images_of(inputs.get("reference_images"))
        if references:
            extra["reference_images"] = references
        if inputs.get("seed") is not None:
            extra["seed"] = seed_of(inputs["seed"], self.name)
        previews = self.params.previews
        with streaming(self.name, previews=previews) if previews else contextlib.nullcontext():
            image = await engine(
                ctx,
                str(inputs["prompt"]),
                config,
                output_name=self.params.output_name or f"{self.output_stem()}.png",
                width=self.params.width,
                height=self.params.height,
                **extra,
            )
        self._check_size(config, image)
        return {"image": image}

    def _check_size(self, config: ModelConfig, image: Image) -> None:
        """Warn when the image is not the size asked (the model made its own): never a
        silent change. Validation refuses sizes a fixed-size model cannot make; this catches
        the rest (aspect-ratio models, a node run on its own)."""
        asked = (self.params.width, self.params.height)
        made = (image.width, image.height)
        if all(a is None or m is None or a == m for a, m in zip(asked, made, strict=True)):
            return
        want = "x".join(str(a) if a is not None else "?" for a in asked)
        log.warning(
            "Node %r (text_to_image): asked for %s, model %r made %sx%s — it makes %s. Set "
            "width and height to a size it makes to get exactly that.",
            self.name,
            want,
            config.slug,
            image.width,
            image.height,
            sizes_made(config),
        )


def images_of(value: Any) -> list[Image]:
    """The images of a ``many`` image port: sources that are images or lists of them."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    found: list[Image] = []
    for item in items:
        found.extend(images_of(item) if isinstance(item, list | tuple) else [item])
    return [i for i in found if isinstance(i, Image)]


def seed_of(value: Any, node: str) -> int:
    """A seed port's value as a non-negative integer (a clear error otherwise)."""
    try:
        seed = int(value)
    except (TypeError, ValueError):
        seed = -1
    if seed < 0 or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigurationError(
            f"Node {node!r}: seed must be a whole number 0 or more, not {value!r}."
        )
    return seed
