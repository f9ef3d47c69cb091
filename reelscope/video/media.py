"""Open a media file safely: existence, type sniffing, limits and metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av

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
class MediaInfo:
    path: Path
    size_bytes: int
    container: str
    duration_s: float
    width: int
    height: int
    fps: float
    has_audio: bool
    video_codec: str
    audio_codec: str


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
    if size > limits.max_file_mb * 1e6:
        raise LimitExceededError(
            f"{path}: file is {size / 1e6:.1f} MB, over the {limits.max_file_mb:g} MB limit"
        )
    return size


def probe(path: Path, limits: Limits) -> MediaInfo:
    """Validate ``path`` as an analyzable video and read its metadata.

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
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no streams"
            raise UnsupportedMediaError(f"{path}: has no video stream ({what})")
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        width, height = vstream.codec_context.width, vstream.codec_context.height
        if not width or not height:
            raise CorruptMediaError(f"{path}: the video stream has no frame size; damaged file")
        duration = _duration(container, vstream)
        fps = float(vstream.average_rate or vstream.guessed_rate or 0.0)
        info = MediaInfo(
            path=path,
            size_bytes=size,
            container=container.format.name,
            duration_s=duration,
            width=width,
            height=height,
            fps=fps,
            has_audio=astream is not None,
            video_codec=vstream.codec_context.name,
            audio_codec=astream.codec_context.name if astream is not None else "",
        )
    if duration <= 0:
        raise CorruptMediaError(f"{path}: the video has no duration; damaged file")
    if duration > limits.max_duration_s:
        raise LimitExceededError(
            f"{path}: video is {duration:.1f} s long, over the {limits.max_duration_s:g} s limit"
        )
    if max(width, height) > limits.max_side_px:
        raise LimitExceededError(
            f"{path}: frames are {width}x{height}, over the {limits.max_side_px} px limit"
        )
    return info


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return 0.0


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().rstrip(".") or type(exc).__name__
