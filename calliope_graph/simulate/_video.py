"""Deterministic audio and video files for the fakes, written with the standard library.

:func:`mp4_bytes` makes a small MP4 that real players decode: an ISO-BMFF file (``ftyp``,
``moov`` with one ``avc1`` video track, ``mdat``) whose H.264 stream is Constrained
Baseline made only of I_PCM macroblocks, i.e. raw YCbCr samples wrapped in valid slice
syntax. No encoder is needed and every frame is a keyframe, so the file stays correct
with nothing but :mod:`struct` and Pillow. Frames come from a still image (a slow
deterministic zoom, like a camera push-in) or, without one, from the prompt.

Also here: :func:`wav_bytes` (a WAV of tones derived from a seed), :func:`mp3_bytes`
(silent MPEG-1 Layer III frames), :func:`is_wav` / :func:`is_mp3` (what a speech
recogniser checks before decoding) and :func:`read_boxes` (an ISO-BMFF box walker, for
tests and sanity checks).
"""

from __future__ import annotations

import io
import math
import re
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image as PILImage

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import _rng, scene_image

__all__ = [
    "Box",
    "is_mp3",
    "is_wav",
    "mp3_bytes",
    "mp4_bytes",
    "mp4_info",
    "read_boxes",
    "video_size",
    "wav_bytes",
]

_MB = 16  # macroblock size in luma samples


# -- bit writing ---------------------------------------------------------------------------
class _Bits:
    """An MSB-first bit writer with the H.264 Exp-Golomb codes."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._n = 0

    def u(self, bits: int, value: int) -> None:
        for shift in range(bits - 1, -1, -1):
            self._acc = (self._acc << 1) | ((value >> shift) & 1)
            self._n += 1
            if self._n == 8:
                self._out.append(self._acc)
                self._acc = 0
                self._n = 0

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.u(length - 1, 0)
        self.u(length, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def ones(self, count: int) -> None:
        """``count`` one-bits (whole bytes at a time once aligned)."""
        while count and self._n:
            self.u(1, 1)
            count -= 1
        self._out += b"\xff" * (count // 8)
        self.u(count % 8, (1 << (count % 8)) - 1)

    @property
    def aligned(self) -> bool:
        return self._n == 0

    def align_zero(self) -> None:
        while self._n:
            self.u(1, 0)

    def raw(self, data: bytes) -> None:
        if not self.aligned:
            raise ValueError("raw bytes need a byte-aligned writer")
        self._out += data

    def trailing(self) -> bytes:
        """rbsp_trailing_bits(): a stop bit, then zeros to the byte boundary."""
        self.u(1, 1)
        self.align_zero()
        return bytes(self._out)


def _nal(nal_ref_idc: int, nal_type: int, rbsp: bytes) -> bytes:
    """A NAL unit: header byte plus the payload with emulation prevention applied."""
    return bytes([(nal_ref_idc << 5) | nal_type]) + _EMULATION.sub(b"\x00\x00\x03", rbsp)


#: Two zero bytes followed by a byte of 0-3 get an emulation prevention byte (0x03) after
#: them; the match ends before that byte, so "00 00 00 00" is treated like the spec's loop.
_EMULATION = re.compile(b"\x00\x00(?=[\x00-\x03])")


# -- H.264 (Constrained Baseline, I_PCM) ---------------------------------------------------
_PROFILE, _COMPAT, _LEVEL = 66, 0xC0, 30


def _sps(width: int, height: int) -> bytes:
    mbs_w, mbs_h = -(-width // _MB), -(-height // _MB)
    crop_right = (mbs_w * _MB - width) // 2  # crop units are 2 samples in 4:2:0
    crop_bottom = (mbs_h * _MB - height) // 2
    b = _Bits()
    b.u(8, _PROFILE)
    b.u(8, _COMPAT)
    b.u(8, _LEVEL)
    b.ue(0)  # seq_parameter_set_id
    b.ue(0)  # log2_max_frame_num_minus4
    b.ue(2)  # pic_order_cnt_type: output order = decoding order
    b.ue(1)  # max_num_ref_frames
    b.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    b.ue(mbs_w - 1)
    b.ue(mbs_h - 1)
    b.u(1, 1)  # frame_mbs_only_flag
    b.u(1, 1)  # direct_8x8_inference_flag
    if crop_right or crop_bottom:
        b.u(1, 1)
        b.ue(0)
        b.ue(crop_right)
        b.ue(0)
        b.ue(crop_bottom)
    else:
        b.u(1, 0)
    b.u(1, 0)  # vui_parameters_present_flag
    return _nal(3, 7, b.trailing())


def _pps() -> bytes:
    b = _Bits()
    b.ue(0)  # pic_parameter_set_id
    b.ue(0)  # seq_parameter_set_id
    b.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    b.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    b.ue(0)  # num_slice_groups_minus1
    b.ue(0)  # num_ref_idx_l0_default_active_minus1
    b.ue(0)  # num_ref_idx_l1_default_active_minus1
    b.u(1, 0)  # weighted_pred_flag
    b.u(2, 0)  # weighted_bipred_idc
    b.se(0)  # pic_init_qp_minus26
    b.se(0)  # pic_init_qs_minus26
    b.se(0)  # chroma_qp_index_offset
    b.u(1, 1)  # deblocking_filter_control_present_flag
    b.u(1, 0)  # constrained_intra_pred_flag
    b.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(3, 8, b.trailing())


def _limited(plane: PILImage.Image, luma: bool) -> PILImage.Image:
    """Full-range (JPEG) samples mapped to the video range H.264 assumes by default."""
    if luma:
        table = [16 + round(v * 219 / 255) for v in range(256)]
    else:
        table = [128 + round((v - 128) * 224 / 255) for v in range(256)]
    return plane.point(table)


def _idr(frame: PILImage.Image, idr_id: int) -> bytes:
    """One IDR picture, every macroblock I_PCM, from an RGB frame of whole macroblocks."""
    width, height = frame.size
    y, cb, cr = frame.convert("YCbCr").split()
    y = _limited(y, True)
    cb = _limited(cb.resize((width // 2, height // 2), PILImage.Resampling.BOX), False)
    cr = _limited(cr.resize((width // 2, height // 2), PILImage.Resampling.BOX), False)
    b = _Bits()
    b.ue(0)  # first_mb_in_slice
    b.ue(7)  # slice_type: I (all slices)
    b.ue(0)  # pic_parameter_set_id
    b.u(4, 0)  # frame_num
    b.ue(idr_id)
    b.u(1, 0)  # no_output_of_prior_pics_flag
    b.u(1, 0)  # long_term_reference_flag
    b.se(0)  # slice_qp_delta
    b.ue(1)  # disable_deblocking_filter_idc
    b.ue(25)  # the first mb_type I_PCM, then pcm_alignment_zero_bits
    b.align_zero()
    luma, blue, red = y.tobytes(), cb.tobytes(), cr.tobytes()
    half = width // 2
    parts: list[bytes] = []
    for mb_y in range(0, height, _MB):
        for mb_x in range(0, width, _MB):
            if parts:  # every later macroblock starts byte-aligned: ue(25) and 7 zero bits
                parts.append(b"\x0d\x00")
            start = mb_y * width + mb_x
            parts += [luma[start + r * width : start + r * width + _MB] for r in range(_MB)]
            start = (mb_y // 2) * half + mb_x // 2
            rows = range(0, _MB // 2 * half, half)
            parts += [blue[start + r : start + r + _MB // 2] for r in rows]
            parts += [red[start + r : start + r + _MB // 2] for r in rows]
    b.raw(b"".join(parts))
    return _nal(3, 5, b.trailing())


def _pan_frame(frame_num: int, mbs: int, dx: int) -> bytes:
    """A P picture that moves the whole previous picture by ``dx`` whole samples.

    With ``dx`` 0 every macroblock is P_Skip (one ``mb_skip_run``). Otherwise every
    macroblock is P_L0_16x16 with the same motion vector and no residual: the first one
    codes the vector (its predictor is zero), every later one predicts it exactly from its
    neighbours, so its ``mvd`` is zero and its bits are all ones.
    """
    b = _Bits()
    b.ue(0)  # first_mb_in_slice
    b.ue(5)  # slice_type: P (all slices)
    b.ue(0)  # pic_parameter_set_id
    b.u(4, frame_num % 16)
    b.u(1, 0)  # num_ref_idx_active_override_flag
    b.u(1, 0)  # ref_pic_list_modification_flag_l0
    b.u(1, 0)  # adaptive_ref_pic_marking_mode_flag: sliding window
    b.se(0)  # slice_qp_delta
    b.ue(1)  # disable_deblocking_filter_idc
    if dx == 0:
        b.ue(mbs)  # mb_skip_run: the whole picture
    else:
        b.ue(0)  # mb_skip_run
        b.ue(0)  # mb_type P_L0_16x16
        b.se(4 * dx)  # mvd_l0 x, quarter samples
        b.se(0)  # mvd_l0 y
        b.ue(0)  # coded_block_pattern 0 (inter)
        b.ones(5 * (mbs - 1))  # skip run 0, P_L0_16x16, mvd 0, 0, cbp 0
    return _nal(2, 1, b.trailing())


#: How fast the simulated camera pans, in samples a second.
PAN_SPEED = 12
#: A keyframe (drawn afresh from the source) every this many seconds.
KEY_SECONDS = 2


def _source(width: int, height: int, prompt: str, image: bytes | None) -> PILImage.Image:
    """The input image (or the prompt's drawn scene) cover-fitted to ``width`` × ``height``."""
    source: PILImage.Image | None = None
    if image:
        try:
            with pil_open(io.BytesIO(image)) as im:
                source = im.convert("RGB")
        except OSError:
            source = None
    if source is None:
        source = scene_image(prompt.split("|", 1)[0], width, height)
    scale = max(width / source.width, height / source.height)
    fitted = source.resize(
        (max(width, round(source.width * scale)), max(height, round(source.height * scale))),
        PILImage.Resampling.BILINEAR,
    )
    left, top = (fitted.width - width) // 2, (fitted.height - height) // 2
    return fitted.crop((left, top, left + width, top + height))


def _samples(
    width: int, height: int, count: int, fps: int, prompt: str, image: bytes | None
) -> Iterator[bytes]:
    """The H.264 access units of a slow horizontal pan across the image: a keyframe every
    :data:`KEY_SECONDS` (the exact view at that moment) and motion-only P pictures between."""
    padded = (-(-width // _MB) * _MB, -(-height // _MB) * _MB)
    mbs = (padded[0] // _MB) * (padded[1] // _MB)
    pan = [i * PAN_SPEED // fps for i in range(count)]
    travel = pan[-1]
    # The source is fitted a little wider than the frame so the pan has somewhere to go.
    base = _source(width + travel, round(height * (width + travel) / width) & ~1, prompt, image)
    top = (base.height - height) // 2
    leftward = _rng(prompt, "pan").random() < 0.5
    key_every = max(1, KEY_SECONDS * fps)
    idr_id = frame_num = 0
    for index in range(count):
        offset = travel - pan[index] if leftward else pan[index]
        if index % key_every == 0:
            canvas = PILImage.new("RGB", padded, (0, 0, 0))
            canvas.paste(base.crop((offset, top, offset + width, top + height)), (0, 0))
            yield _idr(canvas, idr_id % 2)
            idr_id += 1
            frame_num = 0
            continue
        frame_num += 1
        step = pan[index] - pan[index - 1]
        yield _pan_frame(frame_num, mbs, -step if leftward else step)


def video_size(width: int, height: int, short: int = 480) -> tuple[int, int]:
    """``width`` × ``height`` scaled (keeping its shape) so its shorter side is at least
    ``short`` samples, both sides even: what the video fakes render (480p by default)."""
    scale = max(1.0, short / min(width, height))
    return round(width * scale / 2) * 2, round(height * scale / 2) * 2


# -- ISO-BMFF ------------------------------------------------------------------------------
def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _moov(
    width: int,
    height: int,
    sizes: list[int],
    delta: int,
    timescale: int,
    sps: bytes,
    pps: bytes,
    mdat_offset: int,
) -> bytes:
    duration = delta * len(sizes)
    movie_duration = duration * 1000 // timescale
    mvhd = _full(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, movie_duration),
        struct.pack(">IH10x", 0x00010000, 0x0100),
        _MATRIX,
        bytes(24),
        struct.pack(">I", 2),
    )
    tkhd = _full(
        b"tkhd",
        0,
        3,
        struct.pack(">IIII4xI8x", 0, 0, 1, 0, movie_duration),
        struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0))
    hdlr = _full(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = _full(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
    dinf = _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    avcc = _box(
        b"avcC",
        struct.pack(">BBBBBB", 1, _PROFILE, _COMPAT, _LEVEL, 0xFF, 0xE1),
        struct.pack(">H", len(sps)),
        sps,
        struct.pack(">BH", 1, len(pps)),
        pps,
    )
    name = b"calliope-sim I_PCM"
    avc1 = _box(
        b"avc1",
        struct.pack(">6xH", 1),
        struct.pack(">HH12x", 0, 0),
        struct.pack(">HHIII", width, height, 0x00480000, 0x00480000, 0),
        struct.pack(">H", 1),
        bytes([len(name)]) + name.ljust(31, b"\x00"),
        struct.pack(">Hh", 0x0018, -1),
        avcc,
    )
    stbl = _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full(b"stts", 0, 0, struct.pack(">III", 1, len(sizes), delta)),
        _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(sizes), 1)),
        _full(
            b"stsz",
            0,
            0,
            struct.pack(">II", 0, len(sizes)),
            struct.pack(f">{len(sizes)}I", *sizes),
        ),
        _full(b"stco", 0, 0, struct.pack(">II", 1, mdat_offset)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


def mp4_bytes(
    prompt: str,
    *,
    width: int = 160,
    height: int = 90,
    seconds: float = 5.0,
    fps: int = 24,
    image: bytes | None = None,
) -> bytes:
    """A playable H.264 MP4 of ``seconds`` at ``fps``, deterministic from its arguments.

    With ``image`` (PNG/JPEG bytes) the video shows that picture with a slow camera pan
    (:data:`PAN_SPEED` samples a second); without, the picture is :func:`image_bytes` of
    ``prompt``. ``width`` and ``height`` must be even (4:2:0 chroma); they are cropped from
    whole macroblocks. Keyframes are raw (I_PCM) every :data:`KEY_SECONDS`; the frames
    between only move the picture, so a long clip stays small and quick to make.
    """
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"MP4 frame size must be even and positive, got {width}x{height}")
    if fps < 1 or fps > 120:
        raise ValueError(f"fps must be a whole number from 1 to 120, got {fps}")
    count = max(1, round(seconds * fps))
    timescale, delta = fps * 1000, 1000
    sps, pps = _sps(width, height), _pps()
    samples = [
        struct.pack(">I", len(nal)) + nal
        for nal in _samples(width, height, count, fps, prompt, image)
    ]
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    sizes = [len(s) for s in samples]
    moov = _moov(width, height, sizes, delta, timescale, sps, pps, 0)
    offset = len(ftyp) + len(moov) + 8
    moov = _moov(width, height, sizes, delta, timescale, sps, pps, offset)
    return ftyp + moov + _box(b"mdat", *samples)


@dataclass
class Box:
    """One ISO-BMFF box: its type, where its payload starts, its payload and its children."""

    kind: str
    offset: int
    payload: bytes
    children: list[Box] = field(default_factory=list)

    def find(self, path: str) -> Box | None:
        """The first descendant at ``path`` (``"mdia/minf/stbl"``), or None."""
        head, _, rest = path.partition("/")
        for child in self.children:
            if child.kind == head:
                return child if not rest else child.find(rest)
        return None


_CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl", "dinf", "edts", "udta"}


def read_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """Parse ISO-BMFF boxes in ``data[start:end]`` (containers recursively).

    Raises ValueError when a box size runs past its parent or below the header size,
    i.e. when the file is not well-formed.
    """
    end = len(data) if end is None else end
    boxes: list[Box] = []
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at offset {pos}")
        size, raw_kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {raw_kind!r} at offset {pos} has a bad size {size}")
        kind = raw_kind.decode("latin-1")
        box = Box(kind, pos + header, data[pos + header : pos + size])
        if kind in _CONTAINERS:
            box.children = read_boxes(data, pos + header, pos + size)
        elif kind == "stsd":
            box.children = read_boxes(data, pos + header + 8, pos + size)
        boxes.append(box)
        pos += size
    return boxes


def mp4_info(data: bytes) -> dict[str, object]:
    """Brand, codec, size, duration and sample count of an MP4 (ValueError if malformed)."""
    boxes = {b.kind: b for b in read_boxes(data)}
    if "ftyp" not in boxes or "moov" not in boxes or "mdat" not in boxes:
        raise ValueError(f"not an MP4: top-level boxes are {sorted(boxes)}")
    moov = boxes["moov"]
    mvhd = moov.find("mvhd")
    stbl = moov.find("trak/mdia/minf/stbl")
    tkhd = moov.find("trak/tkhd")
    if mvhd is None or stbl is None or tkhd is None:
        raise ValueError("MP4 has no video track (mvhd/tkhd/stbl missing)")
    timescale, duration = struct.unpack(">II", mvhd.payload[12:20])
    width, height = struct.unpack(">II", tkhd.payload[-8:])
    stsd = stbl.find("stsd")
    stsz = stbl.find("stsz")
    codec = stsd.children[0].kind if stsd and stsd.children else ""
    count = struct.unpack(">I", stsz.payload[8:12])[0] if stsz else 0
    return {
        "brand": boxes["ftyp"].payload[:4].decode("latin-1"),
        "codec": codec,
        "width": width >> 16,
        "height": height >> 16,
        "duration": duration / timescale if timescale else 0.0,
        "samples": count,
    }


# -- audio ---------------------------------------------------------------------------------
def wav_bytes(seed: str, *, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of a few tones chosen from ``seed``."""
    rng = _rng(seed, "wav")
    tones = [rng.choice((220.0, 262.0, 330.0, 392.0, 440.0, 523.0)) for _ in range(4)]
    frames = int(rate * seconds)
    step = max(frames // len(tones), 1)
    samples = bytearray()
    for i in range(frames):
        freq = tones[min(i // step, len(tones) - 1)]
        samples += struct.pack("<h", int(9000 * math.sin(2 * math.pi * freq * i / rate)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(samples))
    return buf.getvalue()


def is_wav(data: bytes) -> bool:
    """A RIFF/WAVE file whose header the :mod:`wave` module can read."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            return w.getframerate() > 0
    except (wave.Error, EOFError):
        return False


# MPEG audio header tables: version 1 Layer III bitrates, and sample rates per version.
_MP3_BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int | None:
    """Length in bytes of the Layer III frame starting with ``header``, or None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer = (header[1] >> 1) & 3  # 1: Layer III
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    padding = (header[2] >> 1) & 1
    rate = _MP3_RATES[version][rate_index]
    if version == 3:
        return 144 * _MP3_BITRATES[bitrate_index] * 1000 // rate + padding
    return 72 * _MP3_BITRATES_V2[bitrate_index] * 1000 // rate + padding


def is_mp3(data: bytes) -> bool:
    """An MP3: an optional ID3v2 tag, then two consecutive valid Layer III frame headers
    (or one frame that fills the rest of the data)."""
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = 0
        for byte in data[6:10]:
            size = (size << 7) | (byte & 0x7F)
        pos = 10 + size
    length = _mp3_frame_length(data[pos : pos + 4])
    if length is None:
        return False
    following = data[pos + length : pos + length + 4]
    return not following or _mp3_frame_length(following) is not None


def mp3_bytes(seconds: float = 1.0) -> bytes:
    """Silent MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, mono) lasting ``seconds``."""
    header = bytes((0xFF, 0xFB, 0x90, 0xC4))
    length = _mp3_frame_length(header) or 417
    frame = header + bytes(length - len(header))  # zero side info: a silent granule
    count = max(1, round(seconds * 44100 / 1152))
    return frame * count
