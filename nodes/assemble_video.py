"""AssembleVideo: scenes (a picture or a clip, a narration, a caption) → one narrated MP4.

Local, no provider. Each scene's picture — an image letterboxed to the frame size, or a
video clip's frames trimmed or looped — is held for as long as its narration lasts; the
narrations, resampled to one rate, are the sound track, so the video lasts the sum of the
narrations (± one frame). Optional crossfades blend neighbouring scenes *inside* them
(centred on the boundary, so the total length and the narration timing do not change), and
optional captions are burned in with Pillow (wrapped, bottom-centred on a dark band).

Encoding uses PyAV (its wheels ship FFmpeg with libx264 and AAC): H.264 ``yuv420p`` + AAC
in an MP4 with ``+faststart`` (plays while loading in a browser). All decoding, drawing and
encoding runs in a worker thread, never on the event loop, and the file is written to a
hidden temporary file beside the target and renamed over it when complete.

**Inputs.** Parallel lists, one entry per scene — what a map over scenes produces:
``images`` (Image, or None where the scene has a clip), ``clips`` (Video or None: a clip
replaces the scene's image), ``narrations`` (Audio or None) and ``captions`` (text or
None). Or one ``scenes`` list of objects with fields ``image``, ``clip`` (or ``video``),
``narration`` (or ``audio``) and ``caption`` (or ``text``). A scene without narration lasts
``scene_duration`` seconds if set, else its clip's own length; with neither, it is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from calliope_graph._files import _temp_path
from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError, MediaError
from calliope_graph.media import Audio, Image, Video
from calliope_graph.media._image import _open_pil
from calliope_graph.nodes._base import Node, Port, PortType, register_node

if TYPE_CHECKING:
    import av

    from calliope_graph.nodes._pictures import _Picture

# PyAV, Pillow and the drawing helpers (nodes/_pictures.py, which import both) are imported
# inside the functions that decode, draw and encode: importing calliope_graph.nodes registers
# this kind, and validating a flow loads that, without a frame being drawn
# (docs/architecture.md, "Layers": start-up is lazy).

__all__ = ["AssembleParams", "AssembleVideo"]

M = TypeVar("M", Image, Audio, Video)


class AssembleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(1280, ge=16, le=7680, description="frame width in pixels (even)")
    height: int = Field(720, ge=16, le=4320, description="frame height in pixels (even)")
    fps: int = Field(24, ge=1, le=120, description="frames per second")
    crossfade: float = Field(
        0.0, ge=0.0, le=10.0, description="seconds of blend between scenes (0: hard cuts)"
    )
    captions: bool = Field(True, description="burn the captions given into the frames")
    output_name: str = Field("story.mp4", description="file name in the output directory")
    scene_duration: float | None = Field(
        None, gt=0.0, description="seconds for a scene without narration (else its clip's)"
    )
    min_scene: float = Field(
        0.0, ge=0.0, description="shortest scene, in seconds (a shorter narration is padded)"
    )
    sample_rate: int = Field(44100, ge=8000, le=96000, description="audio sample rate")
    channels: Literal[1, 2] = Field(2, description="audio channels: 1 mono, 2 stereo")
    crf: int = Field(23, ge=0, le=51, description="x264 quality (lower is better, larger)")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = (
        Field("veryfast", description="x264 speed (slower is smaller at the same quality)")
    )

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even for H.264 4:2:0 video (got {value}): use {value + 1}")
        return value

    @field_validator("output_name")
    @classmethod
    def _mp4(cls, value: str) -> str:
        if not value.lower().endswith(".mp4"):
            raise ValueError(f"must end in .mp4 (got {value!r})")
        return value


@dataclass
class _Scene:
    number: int  # 1-based, for messages
    image: Image | None = None
    clip: Video | None = None
    narration: Audio | None = None
    caption: str | None = None


@register_node
class AssembleVideo(Node):
    kind = "assemble_video"
    description = (
        "Assemble scenes (image or clip, narration, caption) into one narrated MP4 (local)"
    )
    Params = AssembleParams
    inputs = (
        Port(
            "images",
            PortType.IMAGE,
            required=False,
            is_list=True,
            description="one image per scene (None where a clip is given)",
        ),
        Port(
            "clips",
            PortType.VIDEO,
            required=False,
            is_list=True,
            description="one clip or None per scene; a clip replaces the scene's image",
        ),
        Port(
            "narrations",
            PortType.AUDIO,
            required=False,
            is_list=True,
            description="one narration per scene: the scene lasts as long as it does",
        ),
        Port(
            "captions",
            PortType.TEXT,
            required=False,
            is_list=True,
            description="one caption (or None) per scene, burned in when captions is on",
        ),
        Port(
            "scenes",
            PortType.OBJECT,
            required=False,
            is_list=True,
            description="instead of the lists: objects {image, clip, narration, caption}",
        ),
    )
    outputs = (Port("video", PortType.VIDEO, description="the narrated MP4"),)

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        scenes = self._scenes(inputs)
        # Everything that touches files runs in a worker thread (LangGraph Server refuses
        # blocking calls on its event loop): the path, the encode, the probe.
        target = await asyncio.to_thread(ctx.store.path_for, self.params.output_name)
        video = await asyncio.to_thread(_render, self, scenes, target)
        return {"video": video}

    # -- gathering the scenes ----------------------------------------------------------------
    def _where(self) -> str:
        return f"Node {self.name!r} ({self.kind})"

    def _scenes(self, inputs: Mapping[str, Any]) -> list[_Scene]:
        names = ("images", "clips", "narrations", "captions")
        lists = {n: _as_list(inputs.get(n)) for n in names}
        given = {n: v for n, v in lists.items() if v is not None}
        objects = _as_list(inputs.get("scenes"))
        if objects is not None and given:
            raise ConfigurationError(
                f"{self._where()}: got both 'scenes' and {', '.join(repr(n) for n in given)}: "
                "wire either a list of scene objects or the parallel lists, not both."
            )
        if objects is not None:
            return [self._from_object(i + 1, obj) for i, obj in enumerate(objects)]
        if not given:
            raise ConfigurationError(
                f"{self._where()} has no scenes: wire 'narrations' and 'images' (or 'clips'), "
                "one entry per scene, or a 'scenes' list."
            )
        lengths = {n: len(v) for n, v in given.items()}
        if len(set(lengths.values())) > 1:
            counts = ", ".join(f"{k} {n}" for n, k in lengths.items())
            raise ConfigurationError(
                f"{self._where()}: the scene lists differ in length ({counts}): give one entry "
                "per scene in every list (None where a scene has no clip, image or caption)."
            )
        count = next(iter(lengths.values()))
        if count == 0:
            raise ConfigurationError(f"{self._where()}: the scene lists are empty.")
        out = []
        for i in range(count):
            n = i + 1
            out.append(
                _Scene(
                    n,
                    image=self._media(Image, lists["images"], i, "image"),
                    clip=self._media(Video, lists["clips"], i, "clip"),
                    narration=self._media(Audio, lists["narrations"], i, "narration"),
                    caption=self._text(lists["captions"], i),
                )
            )
        return out

    def _from_object(self, number: int, obj: Any) -> _Scene:
        data = obj.model_dump() if isinstance(obj, BaseModel) else obj
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                f"{self._where()}: scene {number} is {type(obj).__name__}, not an object with "
                "fields image, clip, narration, caption."
            )
        raw = obj if isinstance(obj, BaseModel) else None

        def pick(*keys: str) -> Any:
            for key in keys:
                value = getattr(raw, key, None) if raw is not None else None
                if value is None:
                    value = data.get(key)
                if value is not None:
                    return value
            return None

        return _Scene(
            number,
            image=self._media(Image, [pick("image")], 0, "image", number=number),
            clip=self._media(Video, [pick("clip", "video")], 0, "clip", number=number),
            narration=self._media(
                Audio, [pick("narration", "audio")], 0, "narration", number=number
            ),
            caption=self._text([pick("caption", "text")], 0),
        )

    def _media(
        self,
        cls: type[M],
        values: Sequence[Any] | None,
        i: int,
        what: str,
        *,
        number: int | None = None,
    ) -> M | None:
        if values is None:
            return None
        value = values[i]
        n = number if number is not None else i + 1
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):  # a value read back from JSON
            with contextlib.suppress(ValueError):
                return cls.model_validate(value)
        raise ConfigurationError(
            f"{self._where()}: scene {n}'s {what} is {type(value).__name__}, not "
            f"{'an' if cls is Image or cls is Audio else 'a'} {cls.__name__}: wire a "
            f"{cls.__name__.lower()} output into it."
        )

    @staticmethod
    def _text(values: Sequence[Any] | None, i: int) -> str | None:
        if values is None or values[i] is None:
            return None
        text = str(values[i]).strip()
        return text or None


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return list(value)
    return [value]  # a single value: a one-scene story


# -- planning: durations and sound ------------------------------------------------------------
@dataclass
class _Plan:
    width: int
    height: int
    fps: int
    rate: int
    layout: str
    durations: list[float]
    pcm: bytearray  # s16 interleaved, the whole sound track
    make: Callable[[int], _Picture] | None = None
    _open: dict[int, _Picture] = field(default_factory=dict)

    @property
    def frame_bytes(self) -> int:
        return 2 * (1 if self.layout == "mono" else 2)

    def picture(self, i: int) -> _Picture:
        """Scene ``i``'s picture, made when first needed (so a long story never holds every
        scene's frames at once)."""
        if i not in self._open:
            assert self.make is not None
            self._open[i] = self.make(i)
        return self._open[i]

    def release_before(self, i: int) -> None:
        """Close the pictures of scenes before ``i`` (playback has moved past them)."""
        for j in [j for j in self._open if j < i]:
            self._open.pop(j).close()

    def close(self) -> None:
        self.release_before(len(self.durations) + 1)


def _label(node: AssembleVideo, scene: _Scene, total: int) -> str:
    return f"{node._where()}: scene {scene.number} of {total}"


def _decode_audio(path: str, rate: int, layout: str) -> bytes:
    """``path`` decoded and resampled to s16 interleaved at ``rate``/``layout``."""
    import av

    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    width = 2 * (1 if layout == "mono" else 2)
    chunks: list[bytes] = []

    def keep(frames: list[av.AudioFrame]) -> None:
        for out in frames:
            chunks.append(bytes(out.planes[0])[: out.samples * width])

    with av.open(path) as container:
        if not container.streams.audio:
            raise MediaError("it has no audio stream", path=path)
        for frame in container.decode(container.streams.audio[0]):
            frame.pts = None  # resample by sample count, not by (possibly gappy) timestamps
            keep(resampler.resample(frame))
        keep(resampler.resample(None))
    return b"".join(chunks)


def _plan(node: AssembleVideo, scenes: list[_Scene]) -> _Plan:
    import av

    p = node.params
    layout = "mono" if p.channels == 1 else "stereo"
    rate = int(p.sample_rate)
    width = 2 * int(p.channels)
    plan = _Plan(p.width, p.height, p.fps, rate, layout, [], bytearray())
    total = len(scenes)
    for scene in scenes:
        where = _label(node, scene, total)
        pcm = b""
        duration: float | None = None
        if scene.narration is not None:
            path = scene.narration.path
            try:
                Audio.open(path)  # names a missing, empty or corrupt file clearly
                pcm = _decode_audio(path, rate, layout)
            except MediaError as exc:
                raise MediaError(f"{where}, narration: {exc}", path=path) from None
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise MediaError(
                    f"{where}: narration {path!r} cannot be decoded ({exc}): produce it again "
                    "or re-export it as WAV or MP3.",
                    path=path,
                ) from None
            duration = len(pcm) / (width * rate)
        elif p.scene_duration is not None:
            duration = float(p.scene_duration)
        elif scene.clip is not None:
            duration = _clip(node, scene, total).duration
        if duration is None or duration <= 0:
            has = "an empty narration" if scene.narration is not None else "no narration"
            raise ConfigurationError(
                f"{where} has {has} and no duration: give it a narration, or set "
                "scene_duration (seconds) on the node for scenes without one."
            )
        duration = max(duration, float(p.min_scene))
        samples = round(duration * rate)
        pcm = pcm[: samples * width]
        plan.pcm += pcm + bytes(samples * width - len(pcm))
        plan.durations.append(samples / rate)
    return plan


def _clip(node: AssembleVideo, scene: _Scene, total: int) -> Video:
    """The scene's clip, probed again (a value from an older checkpoint has no duration)."""
    assert scene.clip is not None
    try:
        return Video.open(scene.clip.path)
    except MediaError as exc:
        raise MediaError(
            f"{_label(node, scene, total)}, clip: {exc}", path=scene.clip.path
        ) from None


def _check_visual(node: AssembleVideo, scene: _Scene, total: int) -> _Scene:
    """Scene ``scene`` with its image or clip probed again (before any encoding starts)."""
    where = _label(node, scene, total)
    if scene.clip is not None:
        return replace(scene, clip=_clip(node, scene, total))
    if scene.image is None:
        raise ConfigurationError(
            f"{where} has neither an image nor a clip: wire one image (or clip) per scene."
        )
    try:
        return replace(scene, image=Image.open(scene.image.path))
    except MediaError as exc:
        raise MediaError(f"{where}, image: {exc}", path=scene.image.path) from None


def _picture(node: AssembleVideo, scene: _Scene, total: int) -> _Picture:
    from calliope_graph.nodes._pictures import _caption_overlay, _Clip, _renderer, _Still

    where = _label(node, scene, total)
    size = (int(node.params.width), int(node.params.height))
    caption = (
        _caption_overlay(scene.caption, size) if scene.caption and node.params.captions else None
    )
    render = _renderer(caption, size)
    if scene.clip is not None:
        return _Clip(scene.clip, where, render)
    assert scene.image is not None  # _check_visual made sure
    path = Path(scene.image.path)
    try:
        with _open_pil(path, str(path)) as im:
            im.load()
            rgb = im.convert("RGB")
    except MediaError as exc:
        raise MediaError(f"{where}, image: {exc}", path=str(path)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(
            f"{where}: image {str(path)!r} is corrupt or truncated ({exc}): produce it again.",
            path=str(path),
        ) from None
    return _Still(render(rgb))


# -- encoding ---------------------------------------------------------------------------------
def _render(node: AssembleVideo, scenes: list[_Scene], target: Path) -> Video:
    """Plan, draw and encode the whole video (in a worker thread); return it, probed."""
    total = len(scenes)
    scenes = [_check_visual(node, scene, total) for scene in scenes]
    plan = _plan(node, scenes)
    plan.make = lambda i: _picture(node, scenes[i], total)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # ``fd`` stays open (holding this writer's lock on the temporary file) until the
        # rename: a run killed meanwhile leaves a file the next write knows to be stale.
        tmp, fd = _temp_path(target)
        try:
            _encode(node, plan, tmp)
            os.fsync(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            os.close(fd)
    finally:
        plan.close()
    return Video.open(target)


def _fades(plan: _Plan, crossfade: float) -> list[float]:
    """Half the blend length at each boundary: at most half of either neighbouring scene, so
    a scene's two fades never overlap and the total length is unchanged."""
    d = plan.durations
    return [min(crossfade, d[i], d[i + 1]) / 2 for i in range(len(d) - 1)]


def _encode(node: AssembleVideo, plan: _Plan, path: Path) -> None:
    import av

    p = node.params
    fps = int(plan.fps)
    starts = [0.0]
    for d in plan.durations:
        starts.append(starts[-1] + d)
    total = starts[-1]
    halves = _fades(plan, float(p.crossfade)) if p.crossfade > 0 else []
    count = max(1, round(total * fps))
    frame_bytes = plan.frame_bytes
    total_samples = len(plan.pcm) // frame_bytes
    chunk = 1024
    try:
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream(
                "libx264", rate=fps, options={"crf": str(p.crf), "preset": str(p.preset)}
            )
            video.width, video.height, video.pix_fmt = plan.width, plan.height, "yuv420p"
            audio = out.add_stream("aac", rate=plan.rate, layout=plan.layout)
            sent = 0

            def send_audio(until: int) -> None:
                nonlocal sent
                while sent < until:
                    n = min(chunk, until - sent)
                    frame = av.AudioFrame(format="s16", layout=plan.layout, samples=n)
                    frame.planes[0].update(
                        bytes(plan.pcm[sent * frame_bytes : (sent + n) * frame_bytes])
                    )
                    frame.sample_rate = plan.rate
                    frame.pts = sent
                    frame.time_base = Fraction(1, plan.rate)
                    out.mux(audio.encode(frame))
                    sent += n

            scene = 0
            for k in range(count):
                t = k / fps
                while scene + 1 < len(plan.durations) and t >= starts[scene + 1] - 1e-9:
                    scene += 1
                    plan.release_before(scene - 1)
                frame = _frame_at(plan, starts, halves, scene, t)
                frame.pts = k
                frame.time_base = Fraction(1, fps)
                out.mux(video.encode(frame))
                send_audio(min(total_samples, round((k + 1) / fps * plan.rate)))
            send_audio(total_samples)
            out.mux(video.encode(None))
            out.mux(audio.encode(None))
    except av.FFmpegError as exc:
        raise MediaError(
            f"{node._where()}: encoding {path.name!r} failed ({exc}).", path=str(path)
        ) from None


def _frame_at(
    plan: _Plan, starts: list[float], halves: list[float], i: int, t: float
) -> av.VideoFrame:
    """The frame shown at time ``t`` during scene ``i``, blended across a boundary."""
    from PIL import Image as PILImage

    from calliope_graph.nodes._pictures import _to_frame

    local = t - starts[i]
    picture = plan.picture
    if halves:
        if i + 1 < len(plan.durations) and halves[i] > 0 and t >= starts[i + 1] - halves[i]:
            a, b, h, edge = i, i + 1, halves[i], starts[i + 1]
        elif i > 0 and halves[i - 1] > 0 and t < starts[i] + halves[i - 1]:
            a, b, h, edge = i - 1, i, halves[i - 1], starts[i]
        else:
            a = b = -1
            h = edge = 0.0
        if a >= 0:
            alpha = min(1.0, max(0.0, (t - (edge - h)) / (2 * h)))
            mixed = PILImage.blend(
                picture(a).at(t - starts[a]), picture(b).at(t - starts[b]), alpha
            )
            return _to_frame(mixed)
    still = picture(i).still()
    if still is not None:
        return still
    return _to_frame(picture(i).at(local))
