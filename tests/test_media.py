"""Input images a user might really hand in (bombs, truncated files, huge photos), the one
helper that fits images to each provider off the event loop, and downloads that fail."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

from calliope_graph import media
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.context import RetrySettings, RunContext
from calliope_graph.errors import MediaError, ProviderTimeoutError, TransientProviderError
from calliope_graph.flow import Flow
from calliope_graph.media import Image, ImageLimits, MediaStore, _image, prepared
from calliope_graph.nodes import AnalyzeImage, MergeAnalyses, TextToImage
from calliope_graph.simulate import Simulator

ROOT = Path(__file__).resolve().parent.parent
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_size(path: Path, width: int, height: int, *, rows: int | None = None) -> Path:
    """A grayscale PNG declaring ``width`` x ``height``, built row by row (low memory):
    all-black and complete, or only its first ``rows`` rows (a bomb: a huge size, tiny data)."""
    z = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte + pixels
    parts = [z.compress(row) for _ in range(height if rows is None else rows)]
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )
    return path


def photo(path: Path, size: tuple[int, int] = (320, 240), fmt: str = "JPEG") -> Path:
    PILImage.linear_gradient("L").resize(size).convert("RGB").save(path, fmt)
    return path


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- decompression bombs -----------------------------------------------------------------------
def test_a_decompression_bomb_is_a_media_error_naming_size_and_limit(tmp_path: Path) -> None:
    bomb = png_of_size(tmp_path / "bomb.png", 20000, 20000, rows=2)
    assert bomb.stat().st_size < 10_000  # a few KB that would decode to 400 megapixels
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(MediaError) as info:
            Image.open(bomb)
    message = str(info.value)
    assert "bomb.png" in message and "20000x20000 pixels" in message
    assert f"{media.MAX_IMAGE_PIXELS} pixels" in message and "Resize it" in message
    assert info.value.path == str(bomb)
    assert not seen  # nothing of Pillow's printed


def test_an_image_over_pillows_warning_size_opens_without_a_warning(tmp_path: Path) -> None:
    # 92 MP: past Pillow's DecompressionBombWarning (89.5 MP), within our 150 MP limit.
    big = png_of_size(tmp_path / "big.png", 9600, 9600)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        image = Image.open(big)
    assert (image.width, image.height) == (9600, 9600)
    assert not seen


def test_the_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = photo(tmp_path / "small.jpg", (200, 100))
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(MediaError, match=r"200x100 pixels .* over the limit of .*10000 pixels"):
        Image.open(small)
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 150_000_000)
    monkeypatch.setenv("CALLIOPE_MAX_IMAGE_PIXELS", "19999")
    with pytest.raises(MediaError, match="19999 pixels"):
        Image.open(small)
    assert Image.open(small, max_pixels=20_000).width == 200
    monkeypatch.delenv("CALLIOPE_MAX_IMAGE_PIXELS")
    assert Image.open(small).width == 200


def test_the_cli_refuses_a_bomb_with_exit_5_and_no_traceback(tmp_path: Path) -> None:
    bomb = png_of_size(tmp_path / "bomb.png", 20000, 20000, rows=2)
    result = cli(
        "run", "webcam_story", "--input", f"image={bomb}", "--simulate", "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["media"] == 5, result.output
    assert "20000x20000 pixels" in result.stderr and "bomb.png" in result.stderr
    assert "Traceback" not in result.output and "DecompressionBomb" not in result.output


def _with_text_bomb(path: Path, kind: bytes) -> Path:
    """A small valid PNG with a ``zTXt``/compressed ``iTXt`` chunk after its pixels that
    inflates to 20 MB (Pillow refuses text past 1 MB, but only once it decodes the pixels)."""
    buf = io.BytesIO()
    PILImage.new("RGB", (16, 16), "red").save(buf, "PNG")
    png = buf.getvalue()
    end = png.rindex(b"IEND") - 4
    bomb = zlib.compress(b"A" * (20 << 20), 9)
    head = b"Comment\0\0" if kind == b"zTXt" else b"Comment\0\x01\0\0\0"
    path.write_bytes(png[:end] + _chunk(kind, head + bomb) + png[end:])
    return path


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_a_png_whose_text_inflates_past_pillows_limit_is_bad_input_before_anything_runs(
    tmp_path: Path, kind: bytes
) -> None:
    png = _with_text_bomb(tmp_path / "notes.png", kind)
    assert png.stat().st_size < 50_000
    with pytest.raises(MediaError, match="text chunk") as info:
        Image.open(png)
    assert info.value.path == str(png)
    result = cli(
        "run", "webcam_story", "--input", f"image={png}", "--simulate", "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["media"], result.output
    assert "notes.png" in result.stderr and "without its metadata" in result.stderr
    assert "started" not in result.stderr  # refused before any node (or provider) ran
    assert "ValueError" not in result.output and "Traceback" not in result.output


def test_a_provider_image_with_a_text_bomb_is_kept_and_named(tmp_path: Path) -> None:
    data = _with_text_bomb(tmp_path / "made.png", b"zTXt").read_bytes()
    with pytest.raises(MediaError, match="text chunk"):
        MediaStore(tmp_path / "out").save_image("image.png", data)


def test_a_file_that_is_not_an_image_is_named_as_such_without_internal_class_names(
    tmp_path: Path,
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("shopping list: eggs, milk", encoding="utf-8")
    result = cli(
        "run", "webcam_story", "--input", f"image={text}", "--simulate", "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["media"]
    assert "error (MediaError):" in result.stderr and "not an image" in result.stderr
    assert "_NotAnImage" not in result.output
    with pytest.raises(MediaError, match="not an image") as info:
        MediaStore(tmp_path / "out").save_image("image.png", b"<html>502</html>")
    assert type(info.value) is MediaError


def _webp_declaring(path: Path, width: int, height: int) -> Path:
    """A lossless WebP whose header declares ``width`` x ``height`` (pixels not included)."""
    buf = io.BytesIO()
    PILImage.new("RGB", (16, 16), "red").save(buf, "WEBP", lossless=True)
    data = bytearray(buf.getvalue())
    at = data.index(b"VP8L") + 8  # the signature byte, then 14 bits each of width-1, height-1
    bits = struct.unpack("<I", data[at + 1 : at + 5])[0] & ~((1 << 28) - 1)
    data[at + 1 : at + 5] = struct.pack("<I", bits | (width - 1) | ((height - 1) << 14))
    path.write_bytes(bytes(data))
    return path


def test_a_16383_square_webp_is_refused_naming_its_size_and_the_limit(tmp_path: Path) -> None:
    webp = _webp_declaring(tmp_path / "huge.webp", 16383, 16383)
    with pytest.raises(MediaError) as info:
        Image.open(webp)
    message = str(info.value)
    assert "is 16383x16383 pixels (268 megapixels), over the limit of 150 megapixels" in message
    assert "larger than the limit, over" not in message


def test_a_large_image_input_never_shows_pillows_raw_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow warns past PIL.Image.MAX_IMAGE_PIXELS; lowered here so a small photo is "large"
    # (our own 150 MP limit lets it through), for every place that opens it: the input
    # check, the engines' preparation and the simulated providers that look at it.
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000_000)
    big = photo(tmp_path / "big.jpg", (1400, 1000))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = cli(
            "run", "webcam_story", "--input", f"image={big}", "--simulate", "--out",
            str(tmp_path / "out"),
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not [w for w in seen if issubclass(w.category, PILImage.DecompressionBombWarning)]
    assert "DecompressionBomb" not in result.output


# -- truncated files ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_is_a_media_error_at_input_time(tmp_path: Path, fmt: str) -> None:
    path = photo(tmp_path / f"cut.{fmt.lower()}", (640, 480), fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MediaError, match="corrupt or truncated") as info:
        Image.open(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_from_a_provider_is_kept_and_named(tmp_path: Path, fmt: str) -> None:
    data = photo(tmp_path / f"whole.{fmt.lower()}", (640, 480), fmt).read_bytes()
    cut = data[: len(data) * 2 // 3]
    store = MediaStore(tmp_path / "out")
    with pytest.raises(MediaError, match="corrupt or truncated") as info:
        store.save_image("image.png", cut)
    kept = Path(str(info.value.path))
    assert kept.read_bytes() == cut  # paid for: kept to look at, not thrown away
    assert kept.suffix == (".jpg" if fmt == "JPEG" else ".png")
    whole = store.save_image("again.png", data)
    assert (whole.width, whole.height, whole.mime) == (640, 480, f"image/{fmt.lower()}")


def test_a_jpeg_missing_only_its_end_marker_is_truncated(tmp_path: Path) -> None:
    path = photo(tmp_path / "cut.jpg")
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(MediaError, match="truncated"):
        Image.open(path)


def test_the_cli_refuses_a_truncated_jpeg_with_exit_5(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    data = WEBCAM.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    result = cli(
        "run", "webcam_story", "--input", f"image={cut}", "--simulate", "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["media"], result.output
    assert "cut.jpg" in result.stderr and "truncated" in result.stderr
    assert "Traceback" not in result.output


# -- fitting images to a provider --------------------------------------------------------------
async def test_an_image_that_fits_is_sent_byte_for_byte(tmp_path: Path) -> None:
    image = Image.open(photo(tmp_path / "a.jpg"))
    sent = await prepared(image, ImageLimits("p", max_side=2048, max_bytes=1 << 20))
    assert sent.data == image.read_bytes() and not sent.converted
    assert sent.data_url() == image.data_url()


async def test_large_images_are_scaled_to_the_providers_side(tmp_path: Path) -> None:
    image = Image.open(photo(tmp_path / "wide.png", (4000, 1000), "PNG"))
    sent = await prepared(image, ImageLimits("p", max_side=1000))
    with PILImage.open(io.BytesIO(sent.data)) as im:
        assert im.size == (1000, 250) and im.format == "PNG"
    assert (sent.width, sent.height, sent.mime) == (1000, 250, "image/png")
    assert PILImage.open(image.path).size == (4000, 1000)  # the input is left alone


async def test_formats_a_provider_refuses_become_png(tmp_path: Path) -> None:
    image = Image.open(photo(tmp_path / "scan.bmp", fmt="BMP"))
    sent = await prepared(image, ImageLimits("p", formats=frozenset({"image/jpeg", "image/png"})))
    assert sent.mime == "image/png" and sent.data.startswith(b"\x89PNG")


async def test_heavy_images_are_reencoded_under_the_byte_limit(tmp_path: Path) -> None:
    noise = PILImage.effect_noise((800, 800), 120).convert("RGB")
    noise.save(tmp_path / "noise.png")
    image = Image.open(tmp_path / "noise.png")
    limit = (tmp_path / "noise.png").stat().st_size // 4
    sent = await prepared(image, ImageLimits("p", max_bytes=limit, measure="data_url"))
    assert len(sent.data_url()) <= limit and sent.mime == "image/jpeg"


async def test_too_small_for_the_provider_names_the_minimum(tmp_path: Path) -> None:
    image = Image.open(photo(tmp_path / "tiny.jpg", (64, 40)))
    with pytest.raises(MediaError, match=r"64x40 pixels; acme needs at least 50x50"):
        await prepared(image, ImageLimits("acme", min_side=50))


async def test_a_file_corrupted_after_opening_is_caught_before_sending(tmp_path: Path) -> None:
    path = photo(tmp_path / "a.jpg")
    image = Image.open(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(MediaError, match="corrupt or truncated"):
        await prepared(image, ImageLimits("p"))


# -- two branches, one big image: the decode runs off the event loop ---------------------------
async def test_two_branches_prepare_a_large_image_at_once_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.jpg"
    PILImage.new("RGB", (6000, 6000), (90, 140, 200)).save(big)  # 36 MP, a few hundred KB
    real = media.prepare_image
    both_started = threading.Barrier(2, timeout=60)
    ticks = 0
    seen: list[tuple[str, int, int]] = []

    def spy(image: Image, limits: ImageLimits) -> media.PreparedImage:
        # Each branch waits here for the other: if preparations ran on the event loop (or one
        # after the other) the second would never start and the barrier would break.
        both_started.wait()
        before = ticks
        result = real(image, limits)
        seen.append((threading.current_thread().name, before, ticks))
        return result

    monkeypatch.setattr(_image, "prepare_image", spy)  # what prepared() calls, in a thread

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    flow = Flow("parallel")
    picture = flow.input("photo", "image")
    claude = flow.add("claude", AnalyzeImage("anthropic-claude-sonnet"), {"image": picture})
    llm = flow.add("llm", AnalyzeImage("openai-gpt-4o"), {"image": picture})
    merged = flow.add("merge", MergeAnalyses(), {"analyses": [claude["analysis"], llm["analysis"]]})
    flow.output("analysis", merged["analysis"])
    beat = asyncio.create_task(ticker())
    try:
        result = await flow.ainvoke({"photo": big}, out_dir=tmp_path / "out", simulator=Simulator())
    finally:
        beat.cancel()
    assert result.outputs["analysis"].captions
    assert len(seen) == 2
    main_thread = threading.main_thread().name
    for thread, before, after in seen:
        assert thread != main_thread  # decoded in a worker thread
        assert after > before  # and the event loop kept running meanwhile


# -- downloads ---------------------------------------------------------------------------------
def failing(
    host: str,
    error: Callable[[httpx.Request], Exception],
    inner: httpx.AsyncBaseTransport | None = None,
) -> httpx.MockTransport:
    """A transport raising ``error`` for requests to ``host``, passing others to ``inner``."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == host:
            raise error(request)
        assert inner is not None
        return await inner.handle_async_request(request)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (lambda r: httpx.ConnectError("[Errno 111] Connection refused", request=r), "failed"),
        (lambda r: httpx.RemoteProtocolError("peer closed connection", request=r), "failed"),
        (lambda r: httpx.ReadTimeout("timed out", request=r), "timed out"),
    ],
)
async def test_a_failed_download_is_a_transient_provider_error(
    tmp_path: Path, error: Callable[[httpx.Request], Exception], expected: str
) -> None:
    store = MediaStore(tmp_path)
    url = "https://cdn.example.com/out/video.mp4?_jwt=SECRET-TOKEN"
    async with httpx.AsyncClient(transport=failing("cdn.example.com", error)) as client:
        with pytest.raises(TransientProviderError) as info:
            await store.download(client, url, "clip.mp4", provider="runway")
    failure = info.value
    assert failure.provider == "runway" and failure.error_class in ("transient", "timeout")
    assert isinstance(failure, ProviderTimeoutError) == (expected == "timed out")
    message = str(failure)
    assert message.startswith("runway") and "download of its output" in message
    assert ("did not answer in time" in message) == (expected == "timed out")
    assert "/out/video.mp4" in message
    assert "SECRET-TOKEN" not in message and "_jwt" not in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


async def test_a_transient_fallback_catches_a_failed_cdn_download(tmp_path: Path) -> None:
    simulator = Simulator()

    async def instant(seconds: float) -> None:
        return None

    simulator.sleep = instant
    transport = failing(
        "replicate.delivery",
        lambda r: httpx.ConnectError("All connection attempts failed", request=r),
        simulator.transport(),
    )
    flow = Flow("illustrate")
    text = flow.input("text", "text")
    image = flow.add("image", TextToImage("replicate-flux-schnell"), {"prompt": text})
    backup = flow.add("backup", TextToImage("openai-gpt-image-2"), {"prompt": text})
    flow.fallback(image, to=backup, when=["transient"])
    flow.output("image", image["image"])
    ctx = RunContext.create(
        tmp_path / "out",
        keys=simulator.keys(),
        transport=transport,
        sleep=instant,
        retry=RetrySettings(max_attempts=2, initial_wait=0.0, max_wait=0.0, jitter=0.0),
    )
    try:
        result = await flow.ainvoke({"text": "a lighthouse"}, out_dir=tmp_path / "out", ctx=ctx)
    finally:
        await ctx.aclose()
    (first,) = result.trace.by_node()["image"]
    assert first.error_class == "transient" and first.branch == "fallback:backup"
    assert Path(result.outputs["image"].path).is_file()
    assert simulator.count("replicate") >= 1 and simulator.count("openai") == 1


async def test_a_large_image_given_to_the_server_never_shows_pillows_raw_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from calliope_graph._fetch import Fetcher, FetchPolicy
    from calliope_graph.serve import media_input

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000_000)  # as above: "large" is cheap
    data = photo(tmp_path / "big.png", (1400, 1000), "PNG").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    store = MediaStore(tmp_path / "media" / "thread-1")

    def offline(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request {request.url}")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fetcher = Fetcher(FetchPolicy(), transport=lambda: httpx.MockTransport(offline))
        image = await media_input(
            "image", "image", url, store=store, root=store.root.parent, fetcher=fetcher
        )
    assert isinstance(image, Image) and (image.width, image.height) == (1400, 1000)
    assert not [w for w in seen if issubclass(w.category, PILImage.DecompressionBombWarning)]
