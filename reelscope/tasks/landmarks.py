"""Audio landmarks: what finds music reused under speech or under another video's sound.

A landmark is a pair of spectrogram peaks close in time (Wang, "An industrial-strength
audio search algorithm", ISMIR 2003): the first peak's frequency, the second's offset in
frequency and the time between them, packed into one 23-bit hash and kept with the first
peak's time. A voice over the music hides many of the music's peaks, but each peak that
survives in both recordings still pairs the same way; a copy shows as many equal hashes
whose times differ by one constant offset, unrelated audio as a few scattered ones.

Peaks are chosen per frequency band and per second (the loudest local maxima of the
spectrogram less each frequency's median level), so that music above the voice's range
(cymbals, strings, synthesisers) keeps its peaks when speech is louder below it. Chosen
and measured in ``benchmarks/audio_copies.py`` (BENCHMARKS.md, "Copy detection", "Audio:
music under speech, re-encoded").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from reelscope.tasks.asr import is_silent
from reelscope.tasks.copydetect import NO_MATCH, Alignment

FORMAT = 1  # of stored landmarks
RATE = 16_000  # the audio reelscope decodes
N_FFT = 512
HOP = 256  # 16 ms
STEP_S = HOP / RATE
BANDS = ((4, 32), (32, 64), (64, 128), (128, 256))  # FFT bins: 125-1000-2000-4000-8000 Hz
PEAKS_PER_BAND_S = 30
MIN_LEVEL = 0.5  # a peak stands this far (natural log) above its frequency's median level
FAN_OUT = 6  # pairs per anchor peak
PAIR_FRAMES = (2, 48)  # the second peak 32-768 ms after the first
PAIR_BINS = 64  # and within 2 kHz of it
# a pair's best offset counts the equal hashes within one frame of it; its z-score over
# the count chance would give there maps to the reported audio score: UNRELATED_Z (the
# most unrelated music and speech reached in the benchmark) to 0, COPY_Z to 1
UNRELATED_Z = 8.0
COPY_Z = 28.0


@dataclass(frozen=True)
class Landmarks:
    """A recording's landmark hashes and, for each, its first peak's frame (STEP_S)."""

    hashes: np.ndarray  # (n,) uint32
    frames: np.ndarray  # (n,) int32
    length: int = 0  # frames in the recording


EMPTY = Landmarks(np.zeros(0, np.uint32), np.zeros(0, np.int32))


def _spectrogram(audio: np.ndarray) -> np.ndarray:
    """Log magnitude, (frequency bins, frames)."""
    n = (len(audio) - N_FFT) // HOP + 1
    if n <= 0:
        return np.zeros((N_FFT // 2 + 1, 0), np.float32)
    window = np.hanning(N_FFT).astype(np.float32)
    out = np.empty((N_FFT // 2 + 1, n), np.float32)
    for start in range(0, n, 4096):  # a bounded working set for long recordings
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(start, min(n, start + 4096))[:, None]
        spectrum = np.abs(np.fft.rfft(audio[idx].astype(np.float32) * window, axis=1))
        out[:, start:start + len(idx)] = np.log(spectrum + 1e-6).T
    return out


def peaks(audio: np.ndarray) -> np.ndarray:
    """(frame, bin) of the spectrogram peaks, ordered by frame."""
    level = _spectrogram(audio)
    if level.shape[1] == 0:
        return np.zeros((0, 2), np.int32)
    level -= np.median(level, axis=1, keepdims=True)
    local_max = cv2.dilate(level, np.ones((15, 9), np.uint8))  # +-7 bins, +-4 frames
    is_peak = (level >= local_max) & (level > MIN_LEVEL)
    frames_per_s = round(1 / STEP_S)
    found = []
    for lo, hi in BANDS:
        f, t = np.nonzero(is_peak[lo:hi])
        if len(f) == 0:
            continue
        f += lo
        value = level[f, t]
        second = t // frames_per_s
        order = np.lexsort((-value, second))  # by second, loudest first within it
        f, t, second = f[order], t[order], second[order]
        first_of_second = np.searchsorted(second, second, side="left")
        keep = np.arange(len(second)) - first_of_second < PEAKS_PER_BAND_S
        found.append(np.stack([t[keep], f[keep]], axis=1))
    if not found:
        return np.zeros((0, 2), np.int32)
    both = np.concatenate(found)
    return both[np.lexsort((both[:, 1], both[:, 0]))].astype(np.int32)


def landmarks(audio: np.ndarray) -> Landmarks:
    """The landmarks of 16 kHz mono audio; none for silence, as Chromaprint has none."""
    if is_silent(audio):
        return EMPTY
    p = peaks(audio)
    hashes: list[int] = []
    frames: list[int] = []
    times, bins = p[:, 0].tolist(), p[:, 1].tolist()
    for i, (t1, f1) in enumerate(zip(times, bins, strict=True)):
        paired = 0
        for j in range(i + 1, len(times)):
            dt = times[j] - t1
            if dt < PAIR_FRAMES[0]:
                continue
            if dt > PAIR_FRAMES[1]:
                break
            df = bins[j] - f1
            if abs(df) >= PAIR_BINS:
                continue
            hashes.append((f1 << 13) | ((df + PAIR_BINS) << 6) | dt)
            frames.append(t1)
            paired += 1
            if paired >= FAN_OUT:
                break
    length = max(0, (len(audio) - N_FFT) // HOP + 1)
    return Landmarks(np.array(hashes, np.uint32), np.array(frames, np.int32), length)


def match(query: Landmarks, hits: Sequence[tuple[int, int]], reference_frames: int
          ) -> Alignment:
    """Where ``query`` plays a reference ``reference_frames`` long, from ``hits``: the
    (hash, frame) of each of the reference's landmarks whose hash the query has too."""
    by_hash: dict[int, list[int]] = defaultdict(list)
    for h, t in zip(query.hashes.tolist(), query.frames.tolist(), strict=True):
        by_hash[h].append(t)
    votes: dict[int, int] = defaultdict(int)
    for h, t_ref in hits:
        for t_query in by_hash.get(h, ()):
            votes[t_ref - t_query] += 1
    if not votes:
        return NO_MATCH
    total = sum(votes.values())
    best_offset, best = max(
        ((offset, n + votes.get(offset - 1, 0) + votes.get(offset + 1, 0))
         for offset, n in votes.items()), key=lambda item: item[1])
    chance = 3 * total / max(1, query.length + reference_frames)
    z = (best - chance) / np.sqrt(chance + 1)
    score = float(np.clip((z - UNRELATED_Z) / (COPY_Z - UNRELATED_Z), 0, 1))
    if score == 0:
        return NO_MATCH
    # the query's span whose hashes agree on that offset
    agreeing = [t_query for h, t_ref in hits for t_query in by_hash.get(h, ())
                if abs(t_ref - t_query - best_offset) <= 1]
    q0, q1 = min(agreeing), max(agreeing)
    return Alignment(score, q0 * STEP_S, max(0, q0 + best_offset) * STEP_S,
                     (q1 - q0 + PAIR_FRAMES[0]) * STEP_S)
