"""Every node kind runs on its own against the simulator: ``await node.run(ctx, ...)``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from calliope_graph import (
    ConfigurationError,
    EmptyOutputError,
    Image,
    ImageAnalysis,
    InferenceModelProvider,
    RunContext,
)
from calliope_graph.nodes import (
    AnalyzeImage,
    CensorText,
    Constant,
    Frame,
    ImageAndTextToVideo,
    MergeAnalyses,
    MessagesToObject,
    Passthrough,
    PortType,
    PromptTemplate,
    TextToImage,
    TextToText,
    get_node_kind,
    node_kinds,
)
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes


@pytest.fixture
def photo(ctx: RunContext) -> Image:
    return ctx.store.save_image("webcam.png", image_bytes("a cat on a red sofa", 320, 240))


def test_every_kind_declares_typed_ports() -> None:
    kinds = node_kinds()
    for name in (
        "text_to_text",
        "text_to_image",
        "image_and_text_to_video",
        "analyze_image",
        "audio_to_text",
        "messages_to_object",
        "prompt_template",
        "censor_text",
        "merge_analyses",
        "passthrough",
        "constant",
        "frame",
    ):
        assert name in kinds
    assert TextToImage.inputs[0].type is PortType.TEXT
    assert TextToImage.outputs[0].type is PortType.IMAGE
    assert AnalyzeImage.outputs[0].type is PortType.ANALYSIS


def test_unknown_kind_and_bad_params_are_clear() -> None:
    with pytest.raises(ConfigurationError, match="Known kinds"):
        get_node_kind("text_to_imag")
    with pytest.raises(ConfigurationError, match="width"):
        TextToImage("openai-gpt-image-2", width=-3)


async def test_text_nodes(ctx: RunContext, sim: Simulator) -> None:
    out = await TextToText("openai-gpt-4o").run(ctx, text="Once upon a time")
    assert out["text"]
    softened = await CensorText().run(ctx, text="a gory battle")
    assert softened["text"] and sim.count("openai", "chat") == 2


async def test_empty_continuation_is_an_error_when_asked(ctx: RunContext, monkeypatch) -> None:
    from calliope_graph.engines import _registry

    async def empty(ctx, text, config):
        return "   "

    monkeypatch.setitem(
        _registry._ENGINES,
        (_registry.Conversion.TEXT_TO_TEXT, InferenceModelProvider.OPENAI),
        empty,
    )
    with pytest.raises(EmptyOutputError, match="empty"):
        await TextToText("openai-gpt-4o", empty_is_error=True).run(ctx, text="x")


async def test_image_nodes(ctx: RunContext, photo: Image) -> None:
    out = await TextToImage("openai-gpt-image-2", width=1024, height=1024).run(ctx, prompt="a fox")
    image: Image = out["image"]
    assert Path(image.path).is_file() and image.width == 1024
    analysis = (await AnalyzeImage("azure-vision-4.0").run(ctx, image=photo))["analysis"]
    assert isinstance(analysis, ImageAnalysis) and analysis.description


async def test_video_node_needs_a_video_provider(ctx: RunContext, photo: Image) -> None:
    with pytest.raises(ConfigurationError, match="Providers that serve image_and_text_to_video"):
        await ImageAndTextToVideo("openai-gpt-4o").run(ctx, image=photo, text="a fox runs")


async def test_merge_skips_missing_branches(ctx: RunContext) -> None:
    a = ImageAnalysis(description="a cat", tags=["cat"])
    merged = (await MergeAnalyses().run(ctx, analyses=[a, None]))["analysis"]
    assert merged.description == "a cat"
    with pytest.raises(EmptyOutputError, match="every analysis branch failed"):
        await MergeAnalyses().run(ctx, analyses=[None])


async def test_prompt_template_renders_analysis(ctx: RunContext) -> None:
    node = PromptTemplate(template="Continue: {analysis} ({mood})", defaults={"mood": "calm"})
    assert [p.name for p in node.input_ports] == ["analysis", "mood"]
    text = (await node.run(ctx, analysis=ImageAnalysis(description="a cat", tags=["sofa"])))["text"]
    assert text.startswith("Continue: a cat") and "sofa" in text and "(calm)" in text


class Scene(BaseModel):
    setting: str
    mood: str
    characters: list[str]


async def test_messages_to_object(ctx: RunContext) -> None:
    node: MessagesToObject[Scene] = MessagesToObject("openai-gpt-4o", response_model=Scene)
    scene = (await node.run(ctx, messages="A fox in a snowy forest."))["object"]
    assert isinstance(scene, Scene)


async def test_helpers_and_frame(ctx: RunContext, photo: Image) -> None:
    assert (await Passthrough().run(ctx, value=3))["value"] == 3
    assert (await Constant(value="seed").run(ctx))["value"] == "seed"
    frame = (await Frame().run(ctx, text="The end.", image=photo))["frame"]
    written = json.loads(ctx.store.path_for("frame.json").read_text())
    assert frame.text == written["text"] == "The end."


async def test_a_frame_does_not_wait_on_the_disk(
    ctx: RunContext, photo: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame costs nothing to make again (its text and picture are in the checkpoint):
    written atomically, not fsynced — only what was paid for waits on the disk."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    await Frame().run(ctx, text="The end.", image=photo)
    assert ctx.store.path_for("frame.json").is_file() and synced == []
