"""Decode a video's sampled frames in parallel: one worker per run of GOPs.

A GOP (the frames from one keyframe to the next) decodes without the frames before it,
so the video is cut at keyframes into ``workers`` runs of about equal length and each
run is decoded by its own demuxer and decoder, in a thread (FFmpeg decodes outside
Python's lock). The frames kept are chosen beforehand from the packets' timestamps
(:func:`decode.index_video`: the ones :func:`decode.sample_frames` keeps) and are handed
over as soon as any run decodes one, so the work on them starts while the video still
decodes. Useful where there are many cores: one decoder's own frame threads scale
poorly on one 1080p stream.
"""

from __future__ import annotations

import contextlib
import functools
import math
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av

from reelscope.errors import CorruptMediaError
from reelscope.video.decode import (
    Frame,
    Pictures,
    VideoIndex,
    check_ends,
    decode_wanted,
    index_video,
    sample_frames,
    video_stream,
)
from reelscope.video.media import MediaInfo

MIN_SEGMENT_S = 1.0  # shorter runs are merged: opening a decoder has a cost
FRAMES_WAITING = 2  # decoded frames each segment may hold ready for the consumer


@dataclass(frozen=True)
class Segment:
    start_pts: int | None  # keyframe to seek to; None: the start of the file
    start_s: float  # the frames this segment hands over are in [start_s, end_s)
    end_s: float


def plan(keys: list[tuple[int, float]], duration_s: float, workers: int) -> list[Segment]:
    """Cut at keyframes into at most ``workers`` runs of about equal length."""
    if workers <= 1 or len(keys) < 2:
        return [Segment(None, -math.inf, math.inf)]
    parts = min(workers, max(1, int(duration_s / MIN_SEGMENT_S)))
    cuts: list[tuple[int, float]] = []
    for i in range(1, parts):
        goal = duration_s * i / parts
        pts, t = min(keys[1:], key=lambda k: abs(k[1] - goal))
        if (not cuts or t > cuts[-1][1] + MIN_SEGMENT_S / 2) and t > keys[0][1]:
            cuts.append((pts, t))
    bounds = [(None, -math.inf), *cuts]
    return [
        Segment(pts, start, bounds[i + 1][1] if i + 1 < len(bounds) else math.inf)
        for i, (pts, start) in enumerate(bounds)
    ]


@dataclass(frozen=True)
class _Done:
    last_t: float  # a part's last decoded frame's time


class _Stopped(Exception):
    """Ends a segment's decoding once the consumer has stopped reading (an error in
    another segment, or a caller that closed the generator)."""


def _put(out: queue.Queue[object], item: object, stop: threading.Event) -> None:
    """``item`` into ``out``, waiting while it is full; :class:`_Stopped` once the consumer
    has stopped reading."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return
        except queue.Full:
            continue
    raise _Stopped


class Emit:
    """How a part of :func:`in_parallel` hands its frames to the consumer."""

    def __init__(self, out: queue.Queue[object], stop: threading.Event) -> None:
        self._out, self._stop = out, stop

    def __call__(self, frame: Frame) -> None:
        """Hand ``frame`` over, waiting while the consumer is behind."""
        _put(self._out, frame, self._stop)

    def check(self) -> None:
        """Ends the part (by an exception :func:`in_parallel` expects) once the consumer
        has stopped reading: called between frames that are not handed over."""
        if self._stop.is_set():
            raise _Stopped


def _decode(info: MediaInfo, index: VideoIndex, segment: Segment, pictures: Pictures,
            threads: int, emit: Emit) -> float:
    """Hand each chosen frame of ``segment`` to ``emit``; return the time (from the video's
    start) of the last frame decoded."""
    left = {pts for pts in index.chosen if segment.start_s <= index.times[pts] < segment.end_s}
    last_t, decoded = -1.0, 0
    with av.open(str(info.path)) as container:
        stream = video_stream(container, info)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if segment.start_pts is not None:
            container.seek(segment.start_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame in decode_wanted(container, stream, left):
                emit.check()
                decoded += 1
                if frame.pts is not None:
                    last_t = max(last_t, index.times.get(frame.pts, last_t))
                if frame.pts in left:
                    left.discard(frame.pts)
                    emit(Frame(index=index.chosen[frame.pts],
                               time_s=max(0.0, index.times[frame.pts]), rgb=pictures(frame)))
                if not left or last_t >= segment.end_s:
                    break
        except av.FFmpegError:
            # Damage after good frames (typically a file cut inside its last packet) ends
            # the segment, as a decoder with frame threads would quietly do; whether
            # the video ends too early is judged after all segments (``check_ends``).
            if decoded == 0:
                raise
    return last_t


def decode_frames(info: MediaInfo, fps: float, workers: int, threads: int = 0
                  ) -> Iterator[Frame]:
    """The frames :func:`decode.sample_frames` gives, decoded by up to ``workers``
    segments at once and yielded as they are decoded: each segment's in order, the
    segments' interleaved (``Frame.index`` is the frame's place among all of them).

    ``threads``: decoder threads per segment (0: about two per worker; with one segment,
    one per core)."""
    step = 1.0 / fps
    found = index_video(info, step) if workers > 1 else None
    segments = plan(found.keyframes, info.duration_s, workers) if found is not None else []
    if found is None or len(segments) < 2:
        yield from sample_frames(info, fps, threads=threads, index=found)
        return
    pictures = Pictures(info)
    per_segment = threads or max(1, (workers * 2) // len(segments))
    parts = [functools.partial(_decode, info, found, segment, pictures, per_segment)
             for segment in segments]
    try:
        count, last_t = yield from in_parallel(parts)
    except av.FFmpegError as exc:
        raise CorruptMediaError(f"{info.path}: video cannot be decoded; damaged file ({exc})"
                                ) from exc
    check_ends(info, count, last_t)


def in_parallel(parts: Sequence[Callable[[Emit], float]]
                ) -> Generator[Frame, None, tuple[int, float]]:
    """Run each part in a thread of its own; yield the frames they hand to their ``emit``
    as they come; return how many, and the latest time any part says it decoded. A part's
    exception is raised here once the frames before it are yielded; the other parts then
    stop at their next frame (as they do when the caller stops reading)."""
    # a few frames per part wait for the consumer: decoding never runs far ahead of the
    # work on the frames (a long video's frames would pile up here)
    frames: queue.Queue[object] = queue.Queue(maxsize=FRAMES_WAITING * len(parts))
    stop = threading.Event()
    emit = Emit(frames, stop)

    def run(part: Callable[[Emit], float]) -> None:
        try:
            item: object = _Done(part(emit))
        except _Stopped:
            return
        except BaseException as exc:  # reaches the consumer
            item = exc
        with contextlib.suppress(_Stopped):
            _put(frames, item, stop)

    count, last_t, running = 0, -math.inf, len(parts)
    with ThreadPoolExecutor(len(parts), thread_name_prefix="decode") as pool:
        for part in parts:
            pool.submit(run, part)
        try:
            while running:
                item = frames.get()
                if isinstance(item, Frame):
                    count += 1
                    yield item
                elif isinstance(item, _Done):
                    running -= 1
                    last_t = max(last_t, item.last_t)
                elif isinstance(item, BaseException):
                    raise item
        finally:
            stop.set()
    return count, last_t
