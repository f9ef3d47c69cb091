"""Decode what the models need: sampled RGB frames as displayed, and 16 kHz mono audio.

Times are the streams' timestamps (variable frame rates included), counted from the
video stream's start; the audio is placed on the same clock (a track that starts late
begins with silence).
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from reelscope.errors import CorruptMediaError
from reelscope.video.color import tone_map
from reelscope.video.media import MediaInfo

AUDIO_RATE = 16_000
ANALYSIS_MAX_SIDE = 1280  # frames are handed to the models at most this large
_EPS = 1e-6
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


@dataclass(frozen=True)
class Frame:
    index: int  # position among the sampled frames
    time_s: float
    rgb: np.ndarray  # H x W x 3, uint8, as displayed


class Pictures:
    """Turns a decoded frame into what the models take: 8-bit RGB as displayed (sample
    aspect ratio and rotation applied), its longer side at most ANALYSIS_MAX_SIDE, HDR
    tone-mapped to SDR. The frame is scaled while it is converted (a 4K frame never
    exists in RGB at full size)."""

    def __init__(self, info: MediaInfo) -> None:
        self.info = info
        scale = min(1.0, ANALYSIS_MAX_SIDE / max(info.width, info.height))
        shown = max(1, round(info.width * scale)), max(1, round(info.height * scale))
        self.size = shown  # (width, height) of the frames handed over
        # the same size in the stream's own orientation (a transpose is its own inverse)
        self._width, self._height = info.orientation.shown(*shown)
        self.stored_size = self._width, self._height  # (width, height) before turning
        self._matrix = Colorspace.BT2020 if info.bt2020 else None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.info.transfer:
            full = frame.color_range == _FULL_RANGE
            rgb16 = frame.reformat(
                width=self._width, height=self._height, format="rgb48le",
                src_colorspace=self._matrix,
                src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
                dst_color_range=ColorRange.JPEG,
            ).to_ndarray()
            rgb = tone_map(rgb16, self.info.transfer)
        elif self._matrix is not None:
            rgb = frame.to_ndarray(format="rgb24", width=self._width, height=self._height,
                                   src_colorspace=self._matrix)
        else:
            rgb = frame.to_ndarray(format="rgb24", width=self._width, height=self._height)
        return self.info.orientation.apply(rgb)


def decode_audio(info: MediaInfo) -> np.ndarray:
    """The default audio track as float32 16 kHz mono in [-1, 1], on the video's clock (a
    track that starts after the video begins with that much silence; one that starts
    before it is cut there); empty if there is none."""
    if not info.has_audio:
        return np.zeros(0, dtype=np.float32)
    chunks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    try:
        with av.open(str(info.path)) as container:
            stream = next(s for s in container.streams.audio if s.index == info.audio_index)
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    except av.FFmpegError as exc:
        raise CorruptMediaError(
            f"{info.path}: audio cannot be decoded; damaged file ({exc})"
        ) from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    shift = round(info.audio_start_s * AUDIO_RATE)
    if shift > 0:
        return np.concatenate([np.zeros(shift, np.float32), audio])
    return audio[-shift:]


class Sampler:
    """Which frames are kept: the first frame at or after each multiple of ``step``
    seconds (counted from ``origin``, the video's first timestamp). Frames must be
    offered in presentation order."""

    def __init__(self, step: float, origin: float = 0.0) -> None:
        self.step = step
        self.origin = origin
        self.next_t = 0.0
        self.last_t = -1.0  # the last frame offered, from the origin

    def offer(self, time_s: float | None) -> float | None:
        """The frame's time from the origin if it is kept, else None (``time_s`` None: a
        frame without a timestamp, taken to follow the last one by a step)."""
        t = float(time_s) - self.origin if time_s is not None else self.last_t + self.step
        self.last_t = t
        if t + _EPS < self.next_t:
            return None
        while self.next_t <= t + _EPS:
            self.next_t += self.step
        return max(t, 0.0)


@dataclass(frozen=True)
class VideoIndex:
    """What reading the video stream's packets (no decoding) tells: its keyframes and
    which frames the sampling keeps."""

    keyframes: list[tuple[int, float]]  # (pts, seconds from the start), in order
    chosen: dict[int, int]  # pts of each kept frame -> its position among the kept frames
    times: dict[int, float]  # pts of every frame -> seconds from the start


def video_stream(container: av.container.InputContainer,
                 info: MediaInfo) -> av.video.stream.VideoStream:
    """The stream ``probe`` chose (not a cover picture)."""
    return next(s for s in container.streams.video if s.index == info.video_index)


def index_video(info: MediaInfo, step: float) -> VideoIndex | None:
    """The video's :class:`VideoIndex` for sampling every ``step`` seconds; None when a
    packet has no timestamp (the frames are then chosen as they are decoded)."""
    keys: list[tuple[int, float]] = []
    times: dict[int, float] = {}
    try:
        with av.open(str(info.path)) as container:
            stream = video_stream(container, info)
            base = stream.time_base
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # the end-of-stream marker; a packet the decoder drops
                if packet.pts is None or base is None:
                    return None
                t = float(packet.pts * base) - info.start_s
                times[int(packet.pts)] = t
                if packet.is_keyframe:
                    keys.append((int(packet.pts), t))
    except av.FFmpegError as exc:
        raise CorruptMediaError(f"{info.path}: the video cannot be read; damaged file ({exc})"
                                ) from exc
    sampler = Sampler(step)
    chosen: dict[int, int] = {}
    for pts, t in sorted(times.items(), key=lambda item: item[1]):
        if sampler.offer(t) is not None:
            chosen[pts] = len(chosen)
    return VideoIndex(sorted(keys, key=lambda k: k[1]), chosen, times)


def decode_wanted(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  wanted: Container[int] | None) -> Iterator[av.VideoFrame]:
    """Decode ``stream``'s frames; a frame not in ``wanted`` (pts) that no other frame
    refers to is skipped, not decoded (the frames decoded are the same ones, bit for bit:
    nothing is predicted from a skipped frame). ``wanted`` None: decode every frame."""
    context = stream.codec_context
    for packet in container.demux(stream):
        if wanted is not None:
            keep = packet.pts is None or packet.pts in wanted
            context.skip_frame = "DEFAULT" if keep else "NONREF"
        yield from packet.decode()


def sample_frames(info: MediaInfo, fps: float, skip: bool = True,
                  threads: int = 0, index: VideoIndex | None = None) -> Iterator[Frame]:
    """Yield one frame every ``1/fps`` seconds, as :class:`Pictures` makes them.

    ``threads``: the decoder's threads (0: one per core).
    ``skip``: frames that are not kept and that no other frame refers to are not
    decoded (about half the frames of a typical H.264 video with B-frames).
    ``index``: the video's :func:`index_video` for this ``fps``, when it was already
    read (the packets are then not read again).

    Raises :class:`CorruptMediaError` when the stream is damaged or ends well
    before its declared duration (a truncated file).
    """
    pictures = Pictures(info)
    step = 1.0 / fps
    wanted: Container[int] | None = None
    if skip and index is not None:
        wanted = index.chosen
    elif skip:
        try:
            found = index_video(info, step)
            wanted = found.chosen if found is not None else None
        except CorruptMediaError:
            wanted = None  # decoding says what is wrong, as it would without skipping
    sampler = Sampler(step, info.start_s)
    kept = 0
    try:
        with av.open(str(info.path)) as container:
            stream = video_stream(container, info)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            for frame in decode_wanted(container, stream, wanted):
                t = sampler.offer(frame.time)
                if t is None:
                    continue
                yield Frame(index=kept, time_s=t, rgb=pictures(frame))
                kept += 1
    except av.FFmpegError as exc:
        raise CorruptMediaError(
            f"{info.path}: video cannot be decoded; damaged file ({exc})"
        ) from exc
    check_ends(info, kept, sampler.last_t)


def check_ends(info: MediaInfo, frames: int, last_t: float) -> None:
    """Refuse a decode that gave no frame, or whose last frame (seconds from the start) is
    well before the end."""
    if frames == 0:
        raise CorruptMediaError(f"{info.path}: no video frame could be decoded; damaged file")
    frame_gap = 1.0 / info.fps if info.fps > 0 else 0.1
    if last_t + frame_gap < info.duration_s - max(1.0, 0.1 * info.duration_s):
        raise CorruptMediaError(
            f"{info.path}: video stops at {last_t:.1f} s of {info.duration_s:.1f} s; "
            "the file is truncated"
        )


def check_complete(info: MediaInfo) -> None:
    """Read the video stream's packets, without decoding them: a file cut short fails here.

    Cheap (no decoding), so an upload can be refused at once instead of failing
    later in its analysis.
    """
    last_t = -1.0
    try:
        with av.open(str(info.path)) as container:
            stream = video_stream(container, info)
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    end = packet.pts + (packet.duration or 0)
                    last_t = max(last_t, float(end * packet.time_base))
    except av.FFmpegError as exc:
        raise CorruptMediaError(
            f"{info.path}: the video cannot be read; damaged file ({exc})"
        ) from exc
    if last_t - info.start_s < info.duration_s - max(1.0, 0.1 * info.duration_s):
        raise CorruptMediaError(
            f"{info.path}: video stops at {max(0.0, last_t - info.start_s):.1f} s of "
            f"{info.duration_s:.1f} s; the file is truncated"
        )
