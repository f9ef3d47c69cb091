"""Decode a video's sampled frames in parallel: one worker per run of GOPs.

A GOP (the frames from one keyframe to the next) decodes without the frames before it,
so the video is cut at keyframes into ``workers`` runs of about equal length and each
run is decoded by its own demuxer and decoder, in a thread (FFmpeg decodes outside
Python's lock). The frames chosen are the ones :func:`decode.sample_frames` chooses (the
first frame at or after each multiple of the sampling step) and they are yielded in
order, each run's as soon as it is decoded. Useful where there are many cores: one
decoder's own frame threads scale poorly on one 1080p stream.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import SimpleQueue

import av
import numpy as np

from reelscope.errors import CorruptMediaError
from reelscope.video.decode import Frame, Sampler, check_ends, frame_size, sample_frames
from reelscope.video.media import MediaInfo

_EPS = 1e-6
MIN_SEGMENT_S = 1.0  # shorter runs are merged: opening a decoder has a cost


@dataclass(frozen=True)
class Segment:
    start_pts: int | None  # keyframe to seek to; None: the start of the file
    start_s: float  # frames before this time belong to the previous segment
    end_s: float  # the targets this segment serves are < end_s


def keyframes(info: MediaInfo) -> list[tuple[int, float]]:
    """(pts, seconds) of every keyframe of the video stream, read without decoding."""
    found: list[tuple[int, float]] = []
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pts is not None and base is not None:
                    found.append((int(packet.pts), float(packet.pts * base)))
    except av.FFmpegError as exc:
        raise CorruptMediaError(f"{info.path}: the video cannot be read; damaged file ({exc})"
                                ) from exc
    return sorted(found)


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


class _Stopped(Exception):
    pass


def _decode(info: MediaInfo, segment: Segment, step: float, size: tuple[int, int],
            threads: int, out: SimpleQueue[object], stop: threading.Event) -> float:
    """Put (time, rgb) for each target of ``segment`` into ``out``; return the time of
    the last frame decoded."""
    width, height = size
    sampler = Sampler(step, segment.start_s, segment.end_s)
    decoded = 0
    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if segment.start_pts is not None:
            container.seek(segment.start_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if stop.is_set():
                    raise _Stopped
                decoded += 1
                if sampler.done:
                    break
                t = sampler.offer(frame.time)
                if t is not None:
                    out.put((t, frame.to_ndarray(format="rgb24", width=width, height=height)))
        except av.FFmpegError:
            # Damage after good frames (typically a file cut inside its last packet) ends
            # the segment, as a decoder with frame threads would quietly do; whether
            # the video ends too early is judged after all segments (``check_ends``).
            if decoded == 0:
                raise
    return sampler.last_t


def sample_frames_parallel(info: MediaInfo, fps: float, workers: int) -> Iterator[Frame]:
    """:func:`decode.sample_frames` with the video cut into up to ``workers`` segments
    decoded at once; the same frames, in the same order."""
    segments = plan(keyframes(info), info.duration_s, workers) if workers > 1 else []
    if len(segments) < 2:
        yield from sample_frames(info, fps)
        return
    step = 1.0 / fps
    size = frame_size(info)
    threads = max(1, (workers * 2) // len(segments))
    queues: list[SimpleQueue[object]] = [SimpleQueue() for _ in segments]
    stop = threading.Event()
    done = object()

    def run(i: int) -> None:
        try:
            last = _decode(info, segments[i], step, size, threads, queues[i], stop)
            queues[i].put((done, last))
        except BaseException as exc:  # reaches the consumer, in order
            queues[i].put(exc)

    index, prev_t, last_t = 0, -math.inf, -math.inf
    with ThreadPoolExecutor(len(segments), thread_name_prefix="decode") as pool:
        for i in range(len(segments)):
            pool.submit(run, i)
        try:
            for q in queues:
                while True:
                    item = q.get()
                    if isinstance(item, _Stopped):
                        return
                    if isinstance(item, av.FFmpegError):
                        raise CorruptMediaError(
                            f"{info.path}: video cannot be decoded; damaged file ({item})"
                        ) from item
                    if isinstance(item, BaseException):
                        raise item
                    assert isinstance(item, tuple)
                    if item[0] is done:
                        last_t = max(last_t, item[1])
                        break
                    t, rgb = item
                    if t <= prev_t + _EPS:
                        continue  # the frame a segment's last target took is the next's first
                    prev_t = t
                    assert isinstance(rgb, np.ndarray)
                    yield Frame(index=index, time_s=t, rgb=rgb)
                    index += 1
        finally:
            stop.set()
    check_ends(info, index, last_t)
