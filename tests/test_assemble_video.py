"""AssembleVideo: scenes (image or clip, narration, caption) → one narrated MP4 that PyAV
decodes, lasting the sum of the narrations, with optional crossfades and burned captions."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image as PILImage
from PIL import ImageChops, ImageStat

from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError, MediaError
from calliope_graph.flow import Flow, FlowSpec
from calliope_graph.media import Audio, Image, Video
from calliope_graph.nodes import AssembleVideo, get_node_kind
from calliope_graph.nodes import assemble_video as module
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, mp4_bytes, wav_bytes

SMALL: dict[str, Any] = {"width": 320, "height": 180, "fps": 12}
SECONDS = (0.6, 1.1, 0.8)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder


def image(folder: Path, name: str, prompt: str, size: tuple[int, int] = (160, 90)) -> Image:
    path = folder / name
    path.write_bytes(image_bytes(prompt, *size))
    return Image.open(path)


def solid(folder: Path, name: str, color: tuple[int, int, int]) -> Image:
    path = folder / name
    PILImage.new("RGB", (64, 36), color).save(path)
    return Image.open(path)


def narration(folder: Path, name: str, seconds: float, rate: int = 16000) -> Audio:
    path = folder / name
    path.write_bytes(wav_bytes(name, seconds=seconds, rate=rate))
    return Audio.open(path)


def clip(folder: Path, name: str, seconds: float = 0.5, fps: int = 4) -> Video:
    path = folder / name
    path.write_bytes(mp4_bytes("a fox runs through the snow", seconds=seconds, fps=fps))
    return Video.open(path)


def three_scenes(folder: Path) -> dict[str, Any]:
    """Three scenes: a landscape image, a clip (replacing its image), a portrait image;
    narrations of different lengths and sample rates."""
    return {
        "images": [
            image(folder, "a.png", "a fox finds a key", (160, 90)),
            None,
            image(folder, "c.png", "the fox sleeps", (90, 160)),
        ],
        "clips": [None, clip(folder, "b.mp4"), None],
        "narrations": [
            narration(folder, "a.wav", SECONDS[0], 16000),
            narration(folder, "b.wav", SECONDS[1], 22050),
            narration(folder, "c.wav", SECONDS[2], 8000),
        ],
    }


def seconds(stream: av.VideoStream | av.AudioStream) -> float:
    assert stream.duration is not None and stream.time_base is not None
    return float(stream.duration * stream.time_base)


def probe(path: str | Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        video, audio = container.streams.video, container.streams.audio
        info: dict[str, Any] = {
            "video_streams": len(video),
            "audio_streams": len(audio),
            "video_codec": video[0].codec_context.name,
            "audio_codec": audio[0].codec_context.name,
            "size": (video[0].codec_context.width, video[0].codec_context.height),
            "pix_fmt": video[0].codec_context.pix_fmt,
            "video_s": seconds(video[0]),
            "audio_s": seconds(audio[0]),
            "rate": audio[0].codec_context.sample_rate,
        }
        info["frames"] = [f.to_image() for f in container.decode(video=0)]  # type: ignore[no-untyped-call]
    return info


def diff(
    a: PILImage.Image, b: PILImage.Image, box: tuple[int, int, int, int] | None = None
) -> float:
    """Mean absolute difference of two frames (0-255), optionally inside ``box``."""
    if box is not None:
        a, b = a.crop(box), b.crop(box)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_registered_with_list_ports() -> None:
    assert get_node_kind("assemble_video") is AssembleVideo
    node = AssembleVideo()
    ports = {p.name: p for p in node.input_ports}
    assert all(p.is_list and not p.required for p in ports.values())
    assert ports["narrations"].type.value == "audio" and ports["clips"].type.value == "video"
    assert [p.name for p in node.output_ports] == ["video"]
    assert (node.params.width, node.params.height, node.params.fps) == (1280, 720, 24)
    assert node.params.output_name == "story.mp4"


async def test_three_scenes_make_one_h264_aac_mp4_as_long_as_the_narrations(
    ctx: RunContext, media: Path
) -> None:
    result = await AssembleVideo(**SMALL).run(ctx, **three_scenes(media))
    video = result["video"]
    assert isinstance(video, Video) and Path(video.path) == ctx.store.root / "story.mp4"
    info = probe(video.path)
    assert (info["video_streams"], info["audio_streams"]) == (1, 1)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert info["size"] == (320, 180) and info["pix_fmt"] == "yuv420p"
    total = sum(SECONDS)
    assert info["video_s"] == pytest.approx(total, abs=0.1)
    assert info["audio_s"] == pytest.approx(total, abs=0.1)
    assert info["rate"] == 44100
    assert video.duration == pytest.approx(total, abs=0.1)
    assert (video.width, video.height, video.fps) == (320, 180, 12.0)
    assert len(info["frames"]) == round(total * 12)
    # scene 1 is the image, scene 2 the clip, scene 3 the portrait image (pillarboxed)
    frames = info["frames"]
    first, second, third = frames[3], frames[int(0.6 * 12) + 3], frames[-2]
    assert diff(first, second) > 10 and diff(second, third) > 10
    assert third.getpixel((5, 90)) == pytest.approx((0, 0, 0), abs=12)  # black side bars


async def test_the_encode_runs_in_a_worker_thread(
    ctx: RunContext, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    real = module._encode

    def spy(*args: Any) -> None:
        seen.append(threading.current_thread())
        real(*args)

    monkeypatch.setattr(module, "_encode", spy)
    await AssembleVideo(**SMALL).run(ctx, **three_scenes(media))
    assert seen and seen[0] is not loop_thread


async def test_a_clip_is_looped_over_a_longer_narration_and_trimmed_to_a_shorter_one(
    ctx: RunContext, media: Path
) -> None:
    short = clip(media, "short.mp4", seconds=0.5, fps=4)  # 2 distinct frames, then loops
    long = clip(media, "long.mp4", seconds=3.0, fps=4)
    result = await AssembleVideo(**SMALL, output_name="looped.mp4").run(
        ctx,
        clips=[short, long],
        narrations=[narration(media, "n1.wav", 1.5), narration(media, "n2.wav", 0.5)],
    )
    info = probe(result["video"].path)
    assert info["video_s"] == pytest.approx(2.0, abs=0.1)  # the 3 s clip was cut to 0.5 s
    frames = info["frames"]
    # 12 fps: frames 0, 6 and 12 show the clip's first frame again (0.5 s period)
    assert diff(frames[0], frames[6]) < 3 and diff(frames[0], frames[12]) < 3
    assert diff(frames[0], frames[3]) > 3


async def test_captions_are_burned_in_at_the_bottom(ctx: RunContext, media: Path) -> None:
    scenes = three_scenes(media)
    captions = ["Once upon a time a fox collected the keys everyone had lost", None, "The end"]
    plain = probe(
        (await AssembleVideo(**SMALL, output_name="plain.mp4").run(ctx, **scenes))["video"].path
    )
    shown = probe(
        (await AssembleVideo(**SMALL, output_name="cap.mp4").run(ctx, **scenes, captions=captions))[
            "video"
        ].path
    )
    off = probe(
        (
            await AssembleVideo(**SMALL, captions=False, output_name="off.mp4").run(
                ctx, **scenes, captions=captions
            )
        )["video"].path
    )
    bottom, top = (0, 150, 320, 180), (0, 0, 320, 60)
    a, b = plain["frames"][2], shown["frames"][2]
    assert diff(a, b, bottom) > 15  # a dark band with white text
    assert diff(a, b, top) < 2
    assert diff(plain["frames"][10], shown["frames"][10]) < 2  # scene 2 has no caption
    assert diff(a, off["frames"][2]) < 2  # captions=False ignores them
    assert shown["video_s"] == pytest.approx(plain["video_s"])


async def test_crossfade_blends_inside_the_scenes_without_changing_the_length(
    ctx: RunContext, media: Path
) -> None:
    red, blue = solid(media, "red.png", (220, 0, 0)), solid(media, "blue.png", (0, 0, 220))
    voices = [narration(media, "r.wav", 1.0), narration(media, "b.wav", 1.0)]
    cut = probe(
        (
            await AssembleVideo(**SMALL, output_name="cut.mp4").run(
                ctx, images=[red, blue], narrations=voices
            )
        )["video"].path
    )
    faded = probe(
        (
            await AssembleVideo(**SMALL, crossfade=0.5, output_name="fade.mp4").run(
                ctx, images=[red, blue], narrations=voices
            )
        )["video"].path
    )
    assert faded["video_s"] == pytest.approx(cut["video_s"]) == pytest.approx(2.0, abs=0.1)
    assert faded["audio_s"] == pytest.approx(2.0, abs=0.1)

    def rgb(frame: PILImage.Image) -> tuple[float, ...]:
        return tuple(ImageStat.Stat(frame).mean)

    # the boundary is at frame 12 (1.0 s); the fade spans 0.75 s .. 1.25 s
    assert rgb(cut["frames"][11])[0] > 180 and rgb(cut["frames"][12])[2] > 180
    middle = rgb(faded["frames"][12])
    assert 80 < middle[0] < 150 and 80 < middle[2] < 150  # half red, half blue
    assert rgb(faded["frames"][8])[0] > 180 and rgb(faded["frames"][16])[2] > 180  # outside it
    assert rgb(faded["frames"][10])[0] > rgb(faded["frames"][11])[0] > middle[0]


async def test_scene_objects_are_accepted_instead_of_parallel_lists(
    ctx: RunContext, media: Path
) -> None:
    scenes = [
        {
            "image": image(media, "a.png", "a fox"),
            "audio": narration(media, "a.wav", 0.5),
            "caption": "Hi",
        },
        {"clip": clip(media, "b.mp4"), "narration": narration(media, "b.wav", 0.7)},
    ]
    result = await AssembleVideo(**SMALL).run(ctx, scenes=scenes)
    assert result["video"].duration == pytest.approx(1.2, abs=0.1)


async def test_scenes_without_narration_use_scene_duration_or_their_clip(
    ctx: RunContext, media: Path
) -> None:
    pictures = [image(media, "a.png", "a fox"), None]
    clips = [None, clip(media, "b.mp4", seconds=1.5)]
    voices = [narration(media, "a.wav", 0.5), None]
    own = await AssembleVideo(**SMALL, output_name="own.mp4").run(
        ctx, images=pictures, clips=clips, narrations=voices
    )
    assert own["video"].duration == pytest.approx(0.5 + 1.5, abs=0.1)
    fixed = await AssembleVideo(**SMALL, scene_duration=0.75, output_name="fixed.mp4").run(
        ctx, images=pictures, clips=clips, narrations=voices
    )
    assert fixed["video"].duration == pytest.approx(0.5 + 0.75, abs=0.1)
    silent = await AssembleVideo(**SMALL, scene_duration=1.0, output_name="silent.mp4").run(
        ctx, images=[image(media, "c.png", "night")]
    )
    info = probe(silent["video"].path)
    assert info["audio_streams"] == 1 and info["audio_s"] == pytest.approx(1.0, abs=0.1)


async def test_min_scene_pads_a_short_narration(ctx: RunContext, media: Path) -> None:
    result = await AssembleVideo(**SMALL, min_scene=1.0).run(
        ctx,
        images=[image(media, "a.png", "a"), image(media, "b.png", "b")],
        narrations=[narration(media, "a.wav", 0.25), narration(media, "b.wav", 1.5)],
    )
    assert result["video"].duration == pytest.approx(2.5, abs=0.1)


# -- errors ---------------------------------------------------------------------------------
async def test_a_scene_with_no_narration_and_no_duration_is_named(
    ctx: RunContext, media: Path
) -> None:
    with pytest.raises(
        ConfigurationError, match=r"scene 2 of 3 has no narration and no duration.*scene_duration"
    ):
        await AssembleVideo(**SMALL).run(
            ctx,
            images=[image(media, f"{n}.png", n) for n in "abc"],
            narrations=[narration(media, "a.wav", 0.3), None, narration(media, "c.wav", 0.3)],
        )


async def test_mismatched_list_lengths_are_a_configuration_error(
    ctx: RunContext, media: Path
) -> None:
    with pytest.raises(ConfigurationError, match=r"differ in length \(2 images, 3 narrations\)"):
        await AssembleVideo(**SMALL).run(
            ctx,
            images=[image(media, "a.png", "a"), image(media, "b.png", "b")],
            narrations=[narration(media, f"{n}.wav", 0.3) for n in "abc"],
        )


async def test_a_corrupt_clip_is_a_media_error_naming_the_scene_and_the_old_file_stays(
    ctx: RunContext, media: Path
) -> None:
    old = ctx.store.write_bytes("story.mp4", b"the previous video")
    broken = media / "broken.mp4"
    broken.write_bytes(mp4_bytes("x", seconds=1, fps=2)[:400])
    scenes = three_scenes(media)
    scenes["clips"][1] = Video(path=str(broken), mime="video/mp4")
    with pytest.raises(MediaError, match=r"scene 2 of 3, clip: Video file .*broken\.mp4"):
        await AssembleVideo(**SMALL).run(ctx, **scenes)
    assert old.read_bytes() == b"the previous video"
    assert [p.name for p in ctx.store.root.iterdir()] == ["story.mp4"]  # no temporary file


async def test_a_corrupt_image_or_narration_is_a_media_error_naming_the_scene(
    ctx: RunContext, media: Path
) -> None:
    garbage = media / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    scenes = three_scenes(media)
    scenes["images"][2] = Image(path=str(garbage), mime="image/png", width=8, height=8)
    with pytest.raises(MediaError, match=r"scene 3 of 3, image: Image file .*garbage\.png"):
        await AssembleVideo(**SMALL).run(ctx, **scenes)
    noise = media / "noise.wav"
    noise.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"junk" * 40)
    scenes = three_scenes(media)
    scenes["narrations"][0] = Audio(path=str(noise), mime="audio/wav")
    says = r"scene 1 of 3, narration: Audio file .*noise\.wav.*cannot be read"
    with pytest.raises(MediaError, match=says):
        await AssembleVideo(**SMALL).run(ctx, **scenes)


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ({}, "has no scenes"),
        ({"images": [], "narrations": []}, "empty"),
        ({"captions": ["a caption only"]}, "scene 1 of 1 has neither an image nor a clip"),
        ({"scenes": [{"caption": "x"}], "captions": ["x"]}, "both 'scenes' and 'captions'"),
        ({"scenes": ["not an object"]}, "scene 1 is str"),
        ({"images": ["a.png"]}, "scene 1's image is str"),
    ],
)
async def test_scene_lists_that_cannot_be_assembled_say_why(
    ctx: RunContext, inputs: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says):
        await AssembleVideo(**SMALL).run(ctx, **inputs)


async def test_a_scene_with_neither_image_nor_clip_is_named(ctx: RunContext, media: Path) -> None:
    with pytest.raises(ConfigurationError, match="scene 2 of 2 has neither an image nor a clip"):
        await AssembleVideo(**SMALL).run(
            ctx,
            images=[image(media, "a.png", "a"), None],
            narrations=[narration(media, "a.wav", 0.3), narration(media, "b.wav", 0.3)],
        )


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"width": 321}, "must be even"),
        ({"fps": 0}, "fps"),
        ({"output_name": "story.mov"}, "must end in .mp4"),
        ({"crossfade": -1}, "crossfade"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_params_are_configuration_errors(params: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        AssembleVideo(**params)


async def test_output_name_stays_inside_the_output_directory(ctx: RunContext, media: Path) -> None:
    with pytest.raises(MediaError, match="not allowed"):
        await AssembleVideo(**SMALL, output_name="../escape.mp4").run(ctx, **three_scenes(media))


# -- in a flow: the lists a map produces ------------------------------------------------------
async def test_a_map_over_scenes_wires_its_image_list_into_assembly(tmp_path: Path) -> None:
    """The storyboard's map yields a list of images; assemble_video takes it as is."""
    data = Flow.load("storyboard").spec.model_dump(by_alias=True, exclude_none=True)
    data["name"] = "storyboard_video"
    data["nodes"]["video"] = {
        "kind": "assemble_video",
        "params": {**SMALL, "scene_duration": 0.5},
        "inputs": {"images": "scenes.image"},
    }
    data["outputs"] = {"video": "video.video", "images": "scenes.image"}
    flow = Flow.from_spec(FlowSpec.model_validate(data)).validate()
    sim = Simulator()
    ctx = RunContext.create(tmp_path / "out", keys=sim.keys(), transport=sim.transport())
    try:
        result = await flow.ainvoke(
            {"premise": "a fox who collects lost keys"}, out_dir=tmp_path / "out", ctx=ctx
        )
    finally:
        await ctx.aclose()
    scenes = len(result.outputs["images"])
    video = result.outputs["video"]
    assert isinstance(video, Video) and Path(video.path).name == "story.mp4"
    assert video.duration == pytest.approx(0.5 * scenes, abs=0.1)
    assert probe(video.path)["audio_streams"] == 1
