"""Media values, the media store, configuration, keys and the engine registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

from calliope_graph import KeysModel, ModelConfig
from calliope_graph.config import InferenceModelProvider, catalog
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import ConfigurationError, MediaError
from calliope_graph.media import Image, ImageAnalysis, MediaStore


def test_image_open_probes_size_and_mime(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    PILImage.new("RGB", (64, 32), "red").save(path, "JPEG")
    image = Image.open(path)
    assert (image.width, image.height, image.mime) == (64, 32, "image/jpeg")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        (b"", "empty"),
        (b"not an image at all", "not an image Pillow can read"),
    ],
)
def test_bad_images_raise_media_error_naming_the_file(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError) as info:
        Image.open(path)
    assert "bad.png" in str(info.value)
    assert needle in str(info.value)


def test_store_confines_names_and_converts_jpeg(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    with pytest.raises(MediaError):
        store.path_for("../escape.png")
    jpeg = tmp_path / "in.jpg"
    PILImage.new("RGB", (8, 8), "blue").save(jpeg, "JPEG")
    png = store.as_png(Image.open(jpeg))
    assert png.mime == "image/png" and Path(png.path).is_relative_to(tmp_path)


def test_analysis_merge_and_seed_shape() -> None:
    a = ImageAnalysis(description="a cat", tags=["cat", "sofa"], objects=["cat"])
    b = ImageAnalysis(captions=["a cat on a sofa"], tags=["sofa", "indoor"], text="HELLO")
    merged = a.merge(b)
    assert merged.tags == ["cat", "sofa", "indoor"]
    seed = merged.to_dict()
    assert set(seed) >= {"description", "captions", "tags", "objects", "text"}
    assert "indoor" in merged.all_tags_and_objects


def test_model_config_merges_parameters_model_then_config() -> None:
    config = catalog.get("openai-gpt-4o").with_parameters(temperature=0.1)
    assert isinstance(config, ModelConfig)
    assert config.provider is InferenceModelProvider.OPENAI
    assert config.parameters["temperature"] == 0.1


def test_unknown_catalog_name_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="openai-gpt-4o"):
        catalog.get("openai-gpt-40")


def test_keys_from_env_and_missing_key_names_the_variable() -> None:
    keys = KeysModel.from_env(
        {"OPENAI_API_KEY": "sk-test-123456", "OPENAI_BASE_URL": "http://x/v1"}
    )
    assert keys.base_url("openai") == "http://x/v1"
    assert "sk-test" not in repr(keys)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        keys.require("anthropic")


def test_registry_miss_lists_serving_providers() -> None:
    with pytest.raises(ConfigurationError, match="No image_and_text_to_video engine"):
        get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, "openai")
    with pytest.raises(ConfigurationError, match="Unknown provider"):
        get_engine(Conversion.TEXT_TO_TEXT, "nope")
