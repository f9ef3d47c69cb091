"""Perceptual fingerprints: PDQ per sampled frame, Chromaprint for the audio track."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from reelscope.tasks.asr import is_silent
from reelscope.tasks.chromaprint import raw_fingerprint
from reelscope.video.decode import AUDIO_RATE, Frame

MIN_PDQ_QUALITY = 50  # PDQ's own advice: hashes of flat frames below this are unreliable
PDQ_MAX_SIDE = 640  # frames are hashed at most about this large


@dataclass(frozen=True)
class Fingerprint:
    """What copyright matching compares: frame hashes and the audio fingerprint."""

    frame_step_s: float
    frame_hashes: np.ndarray  # (n, 32) uint8, 256 bits per frame
    frame_quality: np.ndarray  # (n,) uint8, PDQ quality 0-100
    audio: np.ndarray  # (m,) uint32 raw Chromaprint items; empty when silent or absent
    audio_item_s: float

    def to_blobs(self) -> dict[str, bytes | float]:
        return {
            "frame_step_s": self.frame_step_s,
            "frame_hashes": self.frame_hashes.tobytes(),
            "frame_quality": self.frame_quality.tobytes(),
            "audio_fp": self.audio.astype("<u4").tobytes(),
            "audio_item_s": self.audio_item_s,
        }

    @classmethod
    def from_blobs(
        cls,
        frame_step_s: float,
        frame_hashes: bytes,
        frame_quality: bytes,
        audio_fp: bytes,
        audio_item_s: float,
    ) -> Fingerprint:
        return cls(
            frame_step_s=frame_step_s,
            frame_hashes=np.frombuffer(frame_hashes, dtype=np.uint8).reshape(-1, 32),
            frame_quality=np.frombuffer(frame_quality, dtype=np.uint8),
            audio=np.frombuffer(audio_fp, dtype="<u4").astype(np.uint32),
            audio_item_s=audio_item_s,
        )


class FrameHasher:
    """PDQ hashes of frames handed over one at a time (no frame is kept)."""

    def __init__(self) -> None:
        self.done: list[tuple[int, np.ndarray, int]] = []

    def add(self, frame: Frame) -> None:
        import pdqhash

        bits, q = pdqhash.compute(_shrunk(frame.rgb))
        self.done.append((frame.index, np.packbits(bits.astype(np.uint8)), int(q)))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """PDQ hash (packed, (n, 32) uint8) and quality of each frame, in frame order (the
        frames may come in any order)."""
        done = sorted(self.done, key=lambda item: item[0])
        return (np.stack([h for _, h, _ in done]) if done else np.zeros((0, 32), np.uint8),
                np.array([q for _, _, q in done], dtype=np.uint8))


def frame_hashes(frames: Iterable[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`FrameHasher.result` of ``frames``."""
    hasher = FrameHasher()
    for frame in frames:
        hasher.add(frame)
    return hasher.result()


def _shrunk(rgb: np.ndarray) -> np.ndarray:
    """The frame shrunk by a whole factor to at most PDQ_MAX_SIDE: PDQ reduces it to 64 x
    64 anyway; on a 720 x 1280 frame, hashing half the size takes about a fifth of the
    CPU time and changes about 5 of the 256 bits (``benchmarks/pdq_shrink.py``)."""
    factor = math.ceil(max(rgb.shape[:2]) / PDQ_MAX_SIDE)
    if factor <= 1:
        return rgb
    height, width = rgb.shape[0] // factor, rgb.shape[1] // factor
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def audio_fingerprint(audio: np.ndarray) -> tuple[np.ndarray, float]:
    if is_silent(audio):
        return np.zeros(0, dtype=np.uint32), 0.0
    return raw_fingerprint(audio, AUDIO_RATE)


def fingerprint(frames: Iterable[Frame], audio: np.ndarray, frame_step_s: float) -> Fingerprint:
    hashes, quality = frame_hashes(frames)
    items, item_s = audio_fingerprint(audio)
    return Fingerprint(frame_step_s, hashes, quality, items, item_s)
