"""Match a clip against the copyright library.

Video: copy descriptors (``reelscope.tasks.copydetect``) aligned along time, speed
included. A reference stored before them has PDQ hashes only: frames sampled at the
same rate are compared along every time offset; the offset with the most frames within
Hamming distance 31 (PDQ's recommended threshold) wins, and the score is the share of
overlapping frames that match. Audio: landmarks (``reelscope.tasks.landmarks``), which
find music under speech. A reference stored before them has a Chromaprint fingerprint:
raw items are slid against the clip's; the bit agreement at the best offset is rescaled
so that unrelated audio (about 0.5 agreement) scores 0 and identical audio scores 1.
A match is reported by whichever of video and audio scores higher."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from reelscope.report import CopyrightMatch
from reelscope.tasks import copydetect, landmarks
from reelscope.tasks.copydetect import NO_MATCH, Alignment, CopyDescriptors
from reelscope.tasks.fingerprint import MIN_PDQ_QUALITY, Fingerprint
from reelscope.tasks.landmarks import Landmarks

PDQ_MATCH_DISTANCE = 31
MIN_VIDEO_FRAMES = 3
MIN_AUDIO_OVERLAP_S = 3.0
AUDIO_CHANCE = 0.55  # bit agreement between unrelated recordings sits near 0.5


def match_video(query: Fingerprint, ref: Fingerprint) -> Alignment:
    q_ok = query.frame_quality >= MIN_PDQ_QUALITY
    r_ok = ref.frame_quality >= MIN_PDQ_QUALITY
    if q_ok.sum() < MIN_VIDEO_FRAMES or r_ok.sum() < MIN_VIDEO_FRAMES:
        return NO_MATCH
    dist = np.bitwise_count(query.frame_hashes[:, None, :] ^ ref.frame_hashes[None, :, :]).sum(-1)
    valid = q_ok[:, None] & r_ok[None, :]
    hit = (dist <= PDQ_MATCH_DISTANCE) & valid
    n, m = hit.shape
    best = NO_MATCH
    best_key = (0, 0.0)
    for offset in range(-(n - 1), m):  # reference index = query index + offset
        diag_hit = np.diagonal(hit, offset=offset)
        matches = int(diag_hit.sum())
        if matches < MIN_VIDEO_FRAMES:
            continue
        overlap = int(np.diagonal(valid, offset=offset).sum())
        score = matches / overlap
        if (matches, score) <= best_key:
            continue
        best_key = (matches, score)
        idx = np.flatnonzero(diag_hit)
        q0 = int(idx[0]) + max(0, -offset)
        best = Alignment(
            score=score,
            query_start_s=q0 * query.frame_step_s,
            reference_start_s=(q0 + offset) * ref.frame_step_s,
            duration_s=(int(idx[-1]) - int(idx[0]) + 1) * query.frame_step_s,
        )
    return best


def match_audio(query: Fingerprint, ref: Fingerprint) -> Alignment:
    if query.audio.size == 0 or ref.audio.size == 0:
        return NO_MATCH
    item_s = query.audio_item_s or ref.audio_item_s
    min_overlap = max(1, int(MIN_AUDIO_OVERLAP_S / item_s))
    q, r = query.audio, ref.audio
    n, m = q.size, r.size
    if min(n, m) < min_overlap:
        return NO_MATCH
    best_agree, best_offset = 0.0, 0
    for offset in range(
        -(n - min_overlap), m - min_overlap + 1
    ):  # ref index = query index + offset
        q0, r0 = max(0, -offset), max(0, offset)
        length = min(n - q0, m - r0)
        errors = np.bitwise_count(q[q0 : q0 + length] ^ r[r0 : r0 + length]).sum()
        agree = 1.0 - float(errors) / (32.0 * length)
        if agree > best_agree:
            best_agree, best_offset = agree, offset
    q0, r0 = max(0, -best_offset), max(0, best_offset)
    length = min(n - q0, m - r0)
    score = max(0.0, (best_agree - AUDIO_CHANCE) / (1.0 - AUDIO_CHANCE))
    return Alignment(score, q0 * item_s, r0 * item_s, length * item_s)


@dataclass(frozen=True)
class LibraryEntry:
    reference_id: int
    title: str
    fingerprint: Fingerprint
    # video: its copy descriptors, else PDQ hashes in ``fingerprint`` (none: no video match)
    descriptors: CopyDescriptors | None = None
    # audio: the (hash, frame) of its landmarks a clip shares and its length in landmark
    # frames, else Chromaprint in ``fingerprint`` (none: no audio match)
    audio_hits: tuple[tuple[int, int], ...] | None = None
    audio_frames: int = 0


def match_library(
    query: Fingerprint, descriptors: CopyDescriptors, heard: Landmarks,
    library: Iterable[LibraryEntry], min_score: float
) -> tuple[CopyrightMatch, ...]:
    """Every reference whose video or audio matches with at least ``min_score``, best first."""
    found = []
    query_views = descriptors.views()
    for entry in library:
        video = (copydetect.match(descriptors, entry.descriptors, query_views)
                 if entry.descriptors is not None else match_video(query, entry.fingerprint))
        audio = (landmarks.match(heard, entry.audio_hits, entry.audio_frames)
                 if entry.audio_hits is not None else match_audio(query, entry.fingerprint))
        lead = video if video.score >= audio.score else audio
        if lead.score < min_score:
            continue
        found.append(
            CopyrightMatch(
                reference_id=entry.reference_id,
                title=entry.title,
                score=lead.score,
                query_start_s=lead.query_start_s,
                reference_start_s=lead.reference_start_s,
                duration_s=lead.duration_s,
                video_score=video.score,
                audio_score=audio.score,
                speed=lead.speed,
                kind="video" if lead is video else "audio",
            )
        )
    found.sort(key=lambda mt: -mt.score)
    return tuple(found)
