"""Perceptual fingerprints: PDQ per sampled frame, Chromaprint for the audio track."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from reelscope.tasks.asr import is_silent
from reelscope.tasks.chromaprint import raw_fingerprint
from reelscope.video.decode import AUDIO_RATE, Frame

MIN_PDQ_QUALITY = 50  # PDQ's own advice: hashes of flat frames below this are unreliable


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


def frame_hashes(frames: Iterable[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """PDQ hash (packed, (n, 32) uint8) and quality of each frame, as frames come."""
    import pdqhash

    hashes: list[np.ndarray] = []
    quality: list[int] = []
    for frame in frames:
        bits, q = pdqhash.compute(frame.rgb)
        hashes.append(np.packbits(bits.astype(np.uint8)))
        quality.append(int(q))
    return (np.stack(hashes) if hashes else np.zeros((0, 32), dtype=np.uint8),
            np.array(quality, dtype=np.uint8))


def audio_fingerprint(audio: np.ndarray) -> tuple[np.ndarray, float]:
    if is_silent(audio):
        return np.zeros(0, dtype=np.uint32), 0.0
    return raw_fingerprint(audio, AUDIO_RATE)


def fingerprint(frames: Sequence[Frame], audio: np.ndarray, frame_step_s: float) -> Fingerprint:
    hashes, quality = frame_hashes(frames)
    items, item_s = audio_fingerprint(audio)
    return Fingerprint(frame_step_s, hashes, quality, items, item_s)
