"""Open a media file safely: existence, type sniffing, limits and metadata.

What a phone writes is read as a viewer would show it: the display matrix (rotation,
mirroring) and the sample aspect ratio give the displayed size, HDR transfer functions
(PQ, HLG) are recorded so frames can be tone-mapped, and of several audio tracks the
default one is used.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from reelscope.errors import (
    CorruptMediaError,
    EmptyInputError,
    InputNotFoundError,
    LimitExceededError,
    UnsupportedMediaError,
)
from reelscope.video.sniff import sniff

if TYPE_CHECKING:
    from reelscope.config import Settings

# FFmpeg's AVColorTransferCharacteristic values for the HDR transfer functions
_HDR_TRANSFERS = {16: "pq", 18: "hlg"}
_BT2020_MATRICES = (9, 10)  # AVCOL_SPC_BT2020_NCL, _CL


@dataclass(frozen=True)
class Limits:
    max_duration_s: float
    max_side_px: int
    max_file_mb: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits a run with ``settings`` accepts."""
        return cls(settings.max_duration_s, settings.max_side_px, settings.max_file_mb)


@dataclass(frozen=True)
class Orientation:
    """How a decoded picture is turned to be shown, from the stream's display matrix:
    transposed (a quarter turn, with a mirror), then its rows and/or columns reversed.
    The eight combinations are the rotations by quarter turns, each with or without a
    mirror."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_matrix(cls, matrix: tuple[int, ...]) -> Orientation:
        """From FFmpeg's 3x3 display matrix (16.16 fixed point, row-major), which maps a
        decoded pixel (x, y) to the displayed (a*x + c*y, b*x + d*y) plus a shift. Angles
        that are not quarter turns are taken to the nearest one."""
        a, b, _, c, d, *_ = matrix
        if abs(b) + abs(c) > abs(a) + abs(d):  # a quarter turn: x' follows y, y' follows x
            return cls(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
        return cls(flip_rows=d < 0, flip_cols=a < 0)

    def apply(self, picture: np.ndarray) -> np.ndarray:
        """``picture`` (rows, columns, ...) as displayed."""
        if self.transpose:
            picture = picture.swapaxes(0, 1)
        if self.flip_rows:
            picture = picture[::-1]
        if self.flip_cols:
            picture = picture[:, ::-1]
        return picture if self == IDENTITY else np.ascontiguousarray(picture)

    def shown(self, width: int, height: int) -> tuple[int, int]:
        """The displayed (width, height) of a decoded picture of this size."""
        return (height, width) if self.transpose else (width, height)

    @property
    def rotation(self) -> int:
        """Clockwise quarter turns of the (mirrored, if ``mirrored``) picture, in degrees."""
        return _rotation_and_mirror(self)[0]

    @property
    def mirrored(self) -> bool:
        """True when the picture is shown mirrored left to right (before its rotation)."""
        return _rotation_and_mirror(self)[1]


IDENTITY = Orientation()


@cache
def _rotation_and_mirror(o: Orientation) -> tuple[int, bool]:
    """Find which rotation of the (maybe mirrored) picture ``o`` is, on a small probe."""
    probe = np.arange(6).reshape(2, 3)
    shown = o.apply(probe)
    for mirrored in (False, True):
        start = probe[:, ::-1] if mirrored else probe
        for quarter in range(4):
            if np.array_equal(np.rot90(start, k=-quarter), shown):
                return 90 * quarter, mirrored
    raise AssertionError(f"{o} is not a rotation")  # the eight cases are all covered


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    size_bytes: int
    container: str
    duration_s: float
    width: int  # as displayed: after the sample aspect ratio and the rotation
    height: int
    fps: float
    has_audio: bool
    video_codec: str
    audio_codec: str
    coded_width: int = 0  # as stored in the stream
    coded_height: int = 0
    sample_aspect: float = 1.0  # width of a stored pixel over its height
    orientation: Orientation = field(default=IDENTITY)
    pixel_format: str = ""
    bit_depth: int = 8
    transfer: str = ""  # "pq" or "hlg" for HDR video, "" for SDR
    bt2020: bool = False  # the stream's matrix is BT.2020 (HDR and wide-gamut video)
    video_index: int = 0  # the stream analyzed (cover pictures are not video)
    start_s: float = 0.0  # the video stream's first timestamp; reported times start here
    audio_index: int = -1  # the audio stream used (the default track), -1: none
    audio_track: int = -1  # its place among the audio tracks
    audio_tracks: int = 0
    audio_language: str = ""
    audio_start_s: float = 0.0  # when the audio stream starts, in the video's time


@dataclass(frozen=True)
class Checked:
    """A file already hashed and probed: an upload carries these from the server to the
    worker that analyzes it, so that the file is read once for its hash and probed once."""

    sha256: str
    info: MediaInfo

    def to_json(self) -> str:
        info = {**asdict(self.info), "path": str(self.info.path)}
        return json.dumps({"sha256": self.sha256, "info": info})

    @classmethod
    def from_json(cls, text: str, path: Path) -> Checked:
        """The checked file, now at ``path`` (the same content, moved)."""
        data = json.loads(text)
        info = data["info"]
        info.update(path=path, orientation=Orientation(**info["orientation"]))
        return cls(data["sha256"], MediaInfo(**info))


def check_file(path: Path, limits: Limits) -> int:
    """Fail clearly unless ``path`` is a non-empty regular file within the size limit."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InputNotFoundError(f"{path}: is a directory, not a video file")
    if not path.is_file():
        raise UnsupportedMediaError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyInputError(f"{path}: the file is empty (0 bytes)")
    check_size(str(path), size, limits)
    return size


def check_size(name: str, size: int, limits: Limits) -> None:
    """Fail clearly when a file of ``size`` bytes is over the size limit."""
    if size > limits.max_file_mb * 1e6:
        raise LimitExceededError(
            f"{name}: file is {size / 1e6:.1f} MB, over the {limits.max_file_mb:g} MB limit"
        )


def probe(path: Path, limits: Limits) -> MediaInfo:
    """Validate ``path`` as an analyzable video and read its metadata (the first frame is
    decoded: its display matrix and colour say how every frame is to be shown).

    Raises one :class:`~reelscope.errors.InputError` subclass with a one-line
    message for every kind of bad input.
    """
    size = check_file(path, limits)
    kind, is_video = sniff(path)
    if not is_video:
        raise UnsupportedMediaError(f"{path}: not a video file (it looks like a {kind})")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise CorruptMediaError(
            f"{path}: looks like {kind} but cannot be read; the file is truncated or "
            f"damaged ({_reason(exc)})"
        ) from exc
    with container:
        videos = [s for s in container.streams.video
                  if not s.disposition & av.stream.Disposition.attached_pic]
        audios = [s for s in container.streams.audio if s.codec_context is not None]
        if not videos:
            what = "audio only" if audios else "no streams"
            raise UnsupportedMediaError(f"{path}: has no video stream ({what})")
        vstream = videos[0]
        if vstream.codec_context is None:
            raise UnsupportedMediaError(
                f"{path}: the video stream's codec is unknown or cannot be decoded here")
        astream = next((s for s in audios if s.disposition & av.stream.Disposition.default),
                       audios[0] if audios else None)
        context = vstream.codec_context
        coded_w, coded_h = context.width, context.height
        if not coded_w or not coded_h:
            raise CorruptMediaError(f"{path}: the video stream has no frame size; damaged file")
        first = _first_frame(container, vstream, path)
        duration = _duration(container, vstream)
        sar = vstream.sample_aspect_ratio
        sample_aspect = float(sar) if sar is not None and sar > 0 else 1.0
        orientation = _orientation(first)
        width, height = orientation.shown(max(1, round(coded_w * sample_aspect)), coded_h)
        start = _start_s(vstream)
        pixel_format = first.format.name
        info = MediaInfo(
            path=path,
            size_bytes=size,
            container=container.format.name,
            duration_s=duration,
            width=width,
            height=height,
            fps=float(vstream.average_rate or vstream.guessed_rate or 0.0),
            has_audio=astream is not None,
            video_codec=context.codec.canonical_name,  # "av1", not the decoder's name
            audio_codec=astream.codec_context.codec.canonical_name if astream else "",
            coded_width=coded_w,
            coded_height=coded_h,
            sample_aspect=sample_aspect,
            orientation=orientation,
            pixel_format=pixel_format,
            bit_depth=_bit_depth(first),
            transfer=_HDR_TRANSFERS.get(int(first.color_trc or context.color_trc or 0), ""),
            bt2020=int(first.colorspace or context.colorspace or 0) in _BT2020_MATRICES,
            video_index=vstream.index,
            start_s=start,
            audio_index=astream.index if astream is not None else -1,
            audio_track=audios.index(astream) if astream is not None else -1,
            audio_tracks=len(audios),
            audio_language=_language(astream),
            audio_start_s=(_start_s(astream) - start) if astream is not None else 0.0,
        )
    if duration <= 0:
        raise CorruptMediaError(f"{path}: the video has no duration; damaged file")
    if duration > limits.max_duration_s:
        raise LimitExceededError(
            f"{path}: video is {duration:.1f} s long, over the {limits.max_duration_s:g} s limit"
        )
    if max(coded_w, coded_h, width, height) > limits.max_side_px:
        raise LimitExceededError(
            f"{path}: frames are {width}x{height}, over the {limits.max_side_px} px limit"
        )
    return info


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: Path) -> av.VideoFrame:
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                return frame
    except av.FFmpegError as exc:
        raise CorruptMediaError(
            f"{path}: video cannot be decoded; damaged file ({_reason(exc)})") from exc
    raise CorruptMediaError(f"{path}: no video frame could be decoded; damaged file")


def _orientation(frame: av.VideoFrame) -> Orientation:
    container: Any = frame.side_data  # typed as one entry; it is a mapping of them
    data = container.get(SideDataType.DISPLAYMATRIX)
    if data is None or len(bytes(data)) < 36:
        return IDENTITY
    return Orientation.from_matrix(struct.unpack("<9i", bytes(data)[:36]))


def _bit_depth(frame: av.VideoFrame) -> int:
    try:
        return max(c.bits for c in frame.format.components)
    except (AttributeError, ValueError):
        return 8


def _start_s(stream: av.stream.Stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _language(stream: av.stream.Stream | None) -> str:
    if stream is None:
        return ""
    language = stream.metadata.get("language", "") or ""
    return "" if language == "und" else language


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return 0.0


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().rstrip(".") or type(exc).__name__
