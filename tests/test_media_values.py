"""Media values: an image probed when opened (or refused naming the file), the store's
confined names and conversions, an analysis merged and turned into a seed."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

from calliope_graph.errors import MediaError
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
