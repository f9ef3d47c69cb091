"""Decoding a video in parallel segments, skipping the frames nothing needs, gives the
frames one decoder decoding every frame gives; the work on them takes them in the order
they come."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import SAMPLE, faststart_copy

from reelscope.config import Settings
from reelscope.errors import CorruptMediaError
from reelscope.pipeline.runtime import Runtime
from reelscope.tasks.fingerprint import frame_hashes
from reelscope.tasks.ocr import merge_captions, read_frames
from reelscope.video.decode import index_video, sample_frames
from reelscope.video.media import Limits, probe
from reelscope.video.segments import decode_frames, plan

LIMITS = Limits(max_duration_s=600, max_side_px=4096, max_file_mb=500)


def keyframes(info: Any) -> list[tuple[int, float]]:
    found = index_video(info, 0.5)
    assert found is not None
    return found.keyframes


def test_segments_give_the_frames_one_decoder_gives() -> None:
    info = probe(SAMPLE, LIMITS)
    segments = plan(keyframes(info), info.duration_s, 4)
    assert len(segments) == 4  # the sample has a keyframe at each scene cut
    every = list(sample_frames(info, 2.0, skip=False))  # decodes every frame
    skipping = list(sample_frames(info, 2.0))
    arrived = list(decode_frames(info, 2.0, 4))
    parallel = sorted(arrived, key=lambda f: f.index)
    assert len(every) == 24
    for frames in (skipping, parallel):
        assert [f.time_s for f in frames] == [f.time_s for f in every]
        assert [f.index for f in frames] == list(range(24))
        assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(frames, every, strict=True))
    # the frame hashes come out in time order whatever order the frames came in
    for got, want in zip(frame_hashes(arrived), frame_hashes(every), strict=True):
        assert np.array_equal(got, want)


def test_captions_are_read_from_frames_in_the_order_segments_decode_them(
        cache_dir: Path) -> None:
    """Frames of two segments, interleaved: each segment's first frame is read (the frame
    before it has not come), the others only when they change; the captions are the
    ones read in time order."""
    info = probe(SAMPLE, LIMITS)
    frames = list(sample_frames(info, 2.0))
    half = len(frames) // 2
    interleaved = [f for pair in zip(frames[half:], frames[:half], strict=True) for f in pair]
    rt = Runtime(Settings.from_env({}, cache_dir=str(cache_dir), device="cpu"))
    with rt, rt.ocr_reader() as reader:
        in_order = read_frames(reader, frames, 20.0, 2.0)
        out_of_order = read_frames(reader, interleaved, 20.0, 2.0)
    assert [t.time_s for t in out_of_order] == [f.time_s for f in frames]
    captions = [e.text for e in merge_captions(out_of_order, 0.5, info.duration_s)]
    assert captions == [e.text for e in merge_captions(in_order, 0.5, info.duration_s)]
    assert "这是我的猫" in captions and "We are very happy" in captions
    assert sum(not t.reused for t in out_of_order) <= sum(not t.reused for t in in_order) + 1


def test_a_video_with_one_keyframe_is_decoded_whole(tmp_path: Path) -> None:
    clip = tmp_path / "one-gop.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"g": "1000", "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(30):
            rgb = np.full((64, 64, 3), i * 8, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    info = probe(clip, LIMITS)
    assert len(plan(keyframes(info), info.duration_s, 4)) == 1
    frames = list(decode_frames(info, 2.0, 4))
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_a_truncated_video_fails_in_parallel_too(tmp_path: Path) -> None:
    """The index at the front, half the frames: the last segment runs out early."""
    whole = faststart_copy(SAMPLE, tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = probe(cut, LIMITS)
    with pytest.raises(CorruptMediaError, match="the file is truncated"):
        list(decode_frames(info, 2.0, 4))
