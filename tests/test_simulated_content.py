"""What the simulator makes is recognisably about its input (issue 24 item 7).

Stories are built from the prompt's own nouns, pictures draw those nouns with a small
"simulated" mark, the analysis of a photo names colours measured from its pixels (and
invents no objects), videos are 480p at 24 fps made from the input image, and speech is
espeak-ng's voice where it is installed, else tones — all deterministic.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest
from PIL import Image as PILImage
from PIL import ImageStat

from calliope_graph.config import catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import google as engine
from calliope_graph.media import Image
from calliope_graph.simulate import _speech
from calliope_graph.simulate._content import (
    analysis_answer,
    describe_image,
    image_bytes,
    prompt_nouns,
    story_text,
)
from calliope_graph.simulate._video import mp4_bytes, video_size
from calliope_graph.testing import mp4_info

ROOT = Path(__file__).resolve().parents[1]
WEBCAM = ROOT / "examples" / "media" / "webcam.jpg"
FLASH = catalog.get("google-gemini-flash")
VEO = catalog.get("google-veo")
#: Words of the old word-salad vocabulary that must never be "seen" in a real photo.
INVENTED = {"comet", "river", "lantern", "violin", "raven", "harbor", "kite", "compass"}


def pixels(data: bytes) -> PILImage.Image:
    with PILImage.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


# -- stories --------------------------------------------------------------------------------
def test_prompt_nouns_are_the_content_words_in_order() -> None:
    prompt = "Write a short story about a fox who finds a lantern in the garden|42|0"
    assert prompt_nouns(prompt) == ["fox", "lantern", "garden"]  # "finds" is a verb
    assert prompt_nouns("The lighthouse keeper counts the ships.")[:2] == ["keeper", "ships"]
    assert prompt_nouns("the and of") == []


async def test_story_text_uses_the_prompts_nouns(ctx: RunContext) -> None:
    prompt = "Write a short story about a fox who finds a lantern in the garden."
    text = await engine.text_to_text(ctx, prompt, FLASH)
    assert text == await engine.text_to_text(ctx, prompt, FLASH)  # deterministic
    words = {w.strip(".,").lower() for w in text.split()}
    assert {"fox", "lantern", "garden"} <= words
    # Sentences: capitalised, ending in a full stop, no word of the old salad.
    sentences = [s for s in text.split(". ") if s]
    assert len(sentences) >= 2 and all(s[0].isupper() for s in sentences)
    assert text.endswith(".") and "near the write" not in text


def test_story_sentences_follow_the_requested_count_and_fall_back_without_nouns() -> None:
    story = story_text("a dragon guards a castle", sentences=4)
    assert story.count(".") == 4 and "dragon" in story and "castle" in story
    assert story_text("a dragon guards a castle", sentences=4) == story
    assert story_text("", sentences=2).count(".") == 2  # no nouns: a story all the same


# -- images ---------------------------------------------------------------------------------
def test_images_draw_the_prompts_nouns_and_are_marked_simulated() -> None:
    fox = pixels(image_bytes("a fox in a field", 256, 256))
    night = pixels(image_bytes("a cat under the moon at night", 256, 256))
    assert image_bytes("a fox in a field", 256, 256) == image_bytes("a fox in a field", 256, 256)
    # The fox is orange: many orange pixels on the ground; the night sky is dark.
    raw = fox.tobytes()
    orange = sum(
        1
        for k in range(0, len(raw), 3)
        if raw[k] > 180 and 60 < raw[k + 1] < 130 and raw[k + 2] < 60
    )
    assert orange > 0.02 * 256 * 256
    sky = ImageStat.Stat(night.crop((0, 0, 256, 100))).mean
    assert sum(sky) / 3 < 90
    # The "simulated" mark: a black box with white text in the bottom-right corner.
    corner = fox.crop((256 - 66, 256 - 18, 256 - 4, 256 - 4)).convert("L")
    ((low, high),) = ImageStat.Stat(corner).extrema
    assert low < 20 and high > 200
    assert ImageStat.Stat(corner).mean[0] < 100  # mostly the black box
    # The old debug caption (prompt|seed) is gone: the top-left corner is plain sky.
    assert len(fox.crop((0, 0, 120, 20)).getcolors(4096) or []) < 30


def test_an_unknown_noun_gets_a_labelled_generic_object() -> None:
    plain = pixels(image_bytes("a field", 200, 200))
    teapot = pixels(image_bytes("a teapot in a field", 200, 200))
    assert plain.tobytes() != teapot.tobytes()


# -- analysis -------------------------------------------------------------------------------
def test_the_analysis_of_the_example_photo_names_its_real_dominant_colour() -> None:
    data = WEBCAM.read_bytes()
    photo = pixels(data)
    r, g, b = ImageStat.Stat(photo).mean
    assert r > g > b  # the photo really is warm: orange and brown tones
    info = describe_image(data)
    assert info["colours"][0] in ("orange", "brown")
    assert info["caption"].startswith("a wide photo with mostly ")
    assert info["colours"][0] in info["caption"]
    assert info["objects"] == [] and info["faces"] == [] and info["text"] == ""
    answer = analysis_answer(data)
    words = {w.strip(".,").lower() for w in answer["description"].split()}
    assert not words & INVENTED and answer["objects"] == []
    assert (info["width"], info["height"]) == photo.size


async def test_the_simulated_vision_model_describes_the_photo_it_was_given(
    ctx: RunContext,
) -> None:
    analysis = await engine.image_analysis(ctx, Image.open(WEBCAM), FLASH)
    text = analysis.description.lower()
    assert "orange" in text or "brown" in text
    assert not {w.strip(".,") for w in text.split()} & INVENTED


def test_analysis_follows_the_pixels_of_plain_images() -> None:
    def solid(colour: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        PILImage.new("RGB", (64, 48), colour).save(buf, "PNG")
        return buf.getvalue()

    assert describe_image(solid((20, 60, 200)))["colours"] == ["blue"]
    assert describe_image(solid((30, 160, 50)))["colours"] == ["green"]
    dark = describe_image(solid((10, 10, 10)))
    assert dark["colours"] == ["black"] and "dark" in dark["tags"]
    bright = describe_image(solid((250, 250, 250)))
    assert bright["colours"] == ["white"] and "bright" in bright["caption"]
    assert describe_image(b"not an image")["caption"] == "an unreadable image"


# -- video ----------------------------------------------------------------------------------
def test_video_size_is_at_least_480p_keeping_the_shape() -> None:
    assert video_size(160, 90) == (854, 480)
    assert video_size(90, 160) == (480, 854)
    assert video_size(1280, 720) == (1280, 720)


async def test_simulated_video_is_480p_at_24_fps_made_from_the_input_image(
    ctx: RunContext, tmp_path: Path
) -> None:
    video = await engine.image_and_text_to_video(
        ctx, Image.open(WEBCAM), "the cat looks around", VEO, output_name="cat"
    )
    data = Path(video.path).read_bytes()
    info = mp4_info(data)
    assert min(int(str(info["width"])), int(str(info["height"]))) >= 480
    assert info["samples"] == round(float(str(info["duration"])) * 24)
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_image() for _, f in zip(range(30), container.decode(video=0), strict=False)]
    # The first frame is the photo (cover-fitted), not a drawing of the prompt.
    first = frames[0].resize((64, 48))
    photo = pixels(WEBCAM.read_bytes()).resize((64, 48))
    mean_first, mean_photo = ImageStat.Stat(first).mean, ImageStat.Stat(photo).mean
    assert all(abs(a - b) < 12 for a, b in zip(mean_first, mean_photo, strict=True))
    assert frames[0].tobytes() != frames[29].tobytes()  # the camera moves


def test_a_short_clip_decodes_frame_for_frame_and_is_deterministic() -> None:
    av = pytest.importorskip("av")
    data = mp4_bytes("a fox|7", width=640, height=480, seconds=2.5, fps=24)
    assert data == mp4_bytes("a fox|7", width=640, height=480, seconds=2.5, fps=24)
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 60 and frames[0].width == 640 and frames[0].height == 480
    assert frames[48].key_frame  # a fresh keyframe every 2 s keeps the picture sharp


# -- speech ---------------------------------------------------------------------------------
def test_speech_without_espeak_is_the_tones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    text = "The fox finds the lantern."
    pcm = _speech.speech_pcm(text, 2.0, 16000)
    assert pcm == _speech._tones(text, 2.0, 16000) and len(pcm) == 2 * 32000


def test_speech_uses_espeak_ng_where_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in espeak-ng that writes a WAV of 1.5 s at 22050 Hz, like the real one.
    sample = io.BytesIO()
    with wave.open(sample, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(bytes(range(256)) * 258)
    (tmp_path / "voice.wav").write_bytes(sample.getvalue())
    script = tmp_path / "espeak-ng"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat {tmp_path}/voice.wav\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    _speech._espeak.cache_clear()
    text = "The fox finds the lantern in the garden."
    seconds = _speech.speech_seconds(text)
    audio = _speech.speech_audio(text, "wav", rate=24000)
    with wave.open(io.BytesIO(audio), "rb") as w:
        assert w.getnframes() == round(seconds * 24000)
        voiced = w.readframes(w.getnframes())
    assert voiced != _speech._tones(text, seconds, 24000)
    args = (tmp_path / "args").read_text()
    assert "--stdout" in args and text in args
    _speech._espeak.cache_clear()
