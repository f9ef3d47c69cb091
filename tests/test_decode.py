"""Decoding a video in parallel segments gives the frames one decoder gives."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SAMPLE, faststart_copy

from reelscope.errors import CorruptMediaError
from reelscope.video.decode import sample_frames
from reelscope.video.media import Limits, probe
from reelscope.video.segments import keyframes, plan, sample_frames_parallel

LIMITS = Limits(max_duration_s=600, max_side_px=4096, max_file_mb=500)


def test_segments_give_the_frames_one_decoder_gives() -> None:
    info = probe(SAMPLE, LIMITS)
    segments = plan(keyframes(info), info.duration_s, 4)
    assert len(segments) == 4  # the sample has a keyframe at each scene cut
    one = list(sample_frames(info, 2.0))
    parallel = list(sample_frames_parallel(info, 2.0, 4))
    assert [f.time_s for f in parallel] == [f.time_s for f in one]
    assert [f.index for f in parallel] == list(range(len(one))) and len(one) == 24
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(parallel, one, strict=True))


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
    frames = list(sample_frames_parallel(info, 2.0, 4))
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_a_truncated_video_fails_in_parallel_too(tmp_path: Path) -> None:
    """The index at the front, half the frames: the last segment runs out early."""
    whole = faststart_copy(SAMPLE, tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = probe(cut, LIMITS)
    with pytest.raises(CorruptMediaError, match="the file is truncated"):
        list(sample_frames_parallel(info, 2.0, 4))
