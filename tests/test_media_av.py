"""Audio and Video values know their duration (probed with PyAV when opened), and a bad or
unsupported audio/video file is a MediaError naming it (exit 5 from the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.errors import MediaError
from calliope_graph.media import Audio, Video
from calliope_graph.testing import image_bytes, mp3_bytes, mp4_bytes, wav_bytes


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("seconds", [0.4, 1.3, 2.75])
def test_wav_duration_is_probed(tmp_path: Path, seconds: float) -> None:
    audio = Audio.open(write(tmp_path / "a.wav", wav_bytes("tune", seconds=seconds)))
    assert audio.mime == "audio/wav"
    assert audio.duration == pytest.approx(seconds, abs=0.001)


def test_mp3_duration_is_probed(tmp_path: Path) -> None:
    audio = Audio.open(write(tmp_path / "a.mp3", mp3_bytes(2.0)))
    assert audio.mime == "audio/mpeg"
    assert audio.duration == pytest.approx(2.0, abs=0.05)


def test_m4a_written_by_pyav_has_its_duration(tmp_path: Path) -> None:
    """An AAC file (what a TTS engine may answer) is probed like any other."""
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=22050, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=22050)
        frame.planes[0].update(bytes(2 * 22050))
        frame.sample_rate = 22050
        frame.pts = 0
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    audio = Audio.open(path)
    assert audio.mime == "audio/mp4"
    assert audio.duration == pytest.approx(1.0, abs=0.05)


def test_video_knows_duration_size_and_frame_rate(tmp_path: Path) -> None:
    data = mp4_bytes("a fox runs", width=64, height=48, seconds=3, fps=4)
    video = Video.open(write(tmp_path / "v.mp4", data))
    assert video.mime == "video/mp4"
    assert video.duration == pytest.approx(3.0, abs=0.01)
    assert (video.width, video.height) == (64, 48)
    assert video.fps == pytest.approx(4.0)


def test_durations_survive_a_json_round_trip(tmp_path: Path) -> None:
    audio = Audio.open(write(tmp_path / "a.wav", wav_bytes("x", seconds=0.5)))
    video = Video.open(write(tmp_path / "v.mp4", mp4_bytes("x", seconds=1, fps=2)))
    assert Audio.model_validate_json(audio.model_dump_json()) == audio
    assert Video.model_validate_json(video.model_dump_json()) == video


def test_values_written_by_earlier_versions_still_load() -> None:
    """Checkpoints hold these models: the old Audio field name and a Video without the new
    fields both validate."""
    old_audio = Audio.model_validate({"path": "a.wav", "mime": "audio/wav", "duration_s": 1.5})
    assert old_audio.duration == 1.5 and old_audio.duration_s == 1.5
    assert Audio(path="a.wav", mime="audio/wav", duration_s=2.0).duration == 2.0
    old_video = Video.model_validate({"path": "v.mp4", "mime": "video/mp4"})
    assert old_video.duration is None and old_video.width is None and old_video.fps is None


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("fake.wav", b"RIFF\x00\x00\x00\x00WAVE" + b"junk" * 40, "cannot be read"),
        ("fake.mp3", b"\xff" + b"not an mp3 frame" * 20, "cannot be read"),
        ("noise.ogg", b"OggS" + bytes(200), "cannot be read"),
        ("picture.m4a", image_bytes("a kite", 32, 32), "no audio stream"),
        ("named.wav", b"ID3" + bytes(100), "not a RIFF/WAVE file"),
        ("voice.aiff", wav_bytes("x"), "unsupported extension"),
        ("empty.wav", b"", "empty"),
    ],
)
def test_bad_or_unsupported_audio_is_a_media_error_naming_it(
    tmp_path: Path, name: str, data: bytes, says: str
) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(MediaError, match=says) as caught:
        Audio.open(path)
    assert name in str(caught.value) and caught.value.path == str(path)


def test_a_video_file_holding_only_audio_is_not_audio_less_video(tmp_path: Path) -> None:
    """A container with no audio stream is refused as audio; with no video, as video."""
    clip = write(tmp_path / "clip.m4a", mp4_bytes("x", seconds=1, fps=2))
    with pytest.raises(MediaError, match="no audio stream"):
        Audio.open(clip)


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("cut.mp4", mp4_bytes("a fox", seconds=2, fps=2)[:300], "truncated"),
        ("garbage.mp4", b"\x00\x00\x00\x18ftypisom" + bytes(500), "cannot be read"),
        ("still.mp4", image_bytes("a kite", 32, 32), "neither MP4 nor WebM"),
    ],
)
def test_corrupt_video_is_a_media_error_naming_it(
    tmp_path: Path, name: str, data: bytes, says: str
) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(MediaError, match=says) as caught:
        Video.open(path)
    assert name in str(caught.value)


async def test_aopen_probes_off_the_event_loop(tmp_path: Path) -> None:
    audio = await Audio.aopen(write(tmp_path / "a.wav", wav_bytes("x", seconds=0.5)))
    video = await Video.aopen(write(tmp_path / "v.mp4", mp4_bytes("x", seconds=1, fps=2)))
    assert audio.duration == pytest.approx(0.5) and video.duration == pytest.approx(1.0)


def test_cli_run_with_a_corrupt_audio_input_exits_5_naming_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "said.wav", b"RIFF\x00\x00\x00\x00WAVE" + b"junk" * 40)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["run", "voice_story", "--input", f"audio={bad}", "--simulate", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == EXIT_CODES["media"] == 5, result.output
    assert "said.wav" in result.output and "cannot be read" in result.output
    trace = out / "trace.json"
    assert not trace.exists() or json.loads(trace.read_text())["status"] != "ok"
