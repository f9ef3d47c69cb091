"""Copy descriptors: what video copy detection compares, made to survive the edits
re-uploaders make (flip, crop, overlays, colour, re-encoding, speed, bars,
picture-in-picture).

Each sampled frame is described by EfficientNet-Lite0's pooled features (the classifier
reelscope already serves) of the whole frame squashed to the model's input. A reference is
also described flipped; a query also through each picture found inside its frames (bars
trimmed, black or blurred; a picture-in-picture whose edges stay put), decided from its
first frames. A (query, reference) pair is scored along the best straight path through the
similarity matrix of their frames, each frame pair taking its best view, less half of each
query frame's median similarity to the reference, so that footage alike everywhere does not
match on likeness alone; plus how alike the two stretches change along that path (each
side's descriptors less their mean over it: what the scene, the camera's view, bars and a
static overlay hold in common falls away, what moves stays), so that another stretch of the
same fixed camera does not match as a copy. Chosen and measured in
``benchmarks/copy_detection.py`` (BENCHMARKS.md, "Copy detection").
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reelscope.errors import ModelError
from reelscope.tasks.classify import Classifier, ClassifyJob
from reelscope.video.decode import Frame

FORMAT = 1  # of stored descriptors; another format is described again, not misread
SPEEDS = np.arange(0.85, 1.2501, 0.05)
MIN_PATH_S = 2.5  # the shortest copy a path may show
CTX_WEIGHT = 0.5
VIEW_SIDE = 256  # frames are searched for inner pictures at this size
WORK_SIDE = 448  # views are cut from frames shrunk to this size
DECIDE_AFTER = 16  # a query's inner pictures are decided from its first frames, this many
INPUT_SIZE = 224
# the aligned score (path plus change agreement) that unrelated footage stays below and
# that a typical copy reaches in the benchmark; the reported video score maps them to 0
# and 1
UNRELATED_SCORE = 0.3
COPY_SCORE = 1.0

# searching a library: frames projected to SEARCH_DIM dimensions (PCA fitted on real
# images, scripts/fit_copy_projection.py); a reference's key frames are its first frame and
# each next one less than KEY_SIMILARITY alike to the last key frame; a query searches with
# a frame a second, at most QUERY_FRAMES of them
PROJECTION_FILE = Path(__file__).resolve().parent.parent / "models" / "copy_projection.npz"
SEARCH_DIM = 256
KEY_SIMILARITY = 0.9
QUERY_FRAMES = 24

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass(frozen=True)
class CopyDescriptors:
    """One video's frame descriptors, every ``step_s`` seconds: ``whole`` (n, d), and
    ``extra`` views of the same frames (a reference: flipped; a query: its inner pictures).
    Rows are L2-normalised, stored as float16."""

    step_s: float
    whole: np.ndarray
    extra: tuple[np.ndarray, ...] = ()

    def to_blob(self) -> bytes:
        arrays: dict[str, Any] = {
            "format": np.array(FORMAT), "step_s": np.array(self.step_s),
            "whole": self.whole.astype(np.float16),
            **{f"extra{i}": e.astype(np.float16) for i, e in enumerate(self.extra)}}
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    @classmethod
    def from_blob(cls, blob: bytes) -> CopyDescriptors | None:
        """The descriptors in ``blob``; None when they are of another format; ValueError
        when they are damaged."""
        try:
            with np.load(io.BytesIO(blob)) as z:
                if int(z["format"]) != FORMAT:
                    return None
                extra = tuple(z[f"extra{i}"] for i in range(len(z.files) - 3))
                return cls(float(z["step_s"]), z["whole"], extra)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"copy descriptors are damaged: {exc}") from exc

    def views(self) -> list[np.ndarray]:
        return [self.whole.astype(np.float32), *(e.astype(np.float32) for e in self.extra)]


@dataclass(frozen=True)
class Alignment:
    """Where a query shows a reference, video or audio."""

    score: float  # 0-1
    query_start_s: float
    reference_start_s: float
    duration_s: float
    speed: float = 1.0  # the copy plays this many times as fast as the reference


NO_MATCH = Alignment(0.0, 0.0, 0.0, 0.0)


def squash(rgb: np.ndarray) -> np.ndarray:
    """The model's input for copy descriptors: the whole picture resized (not cropped),
    scaled to [-1, 1], 3 x 224 x 224."""
    x = cv2.resize(rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return (x.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def shrunk(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(8, round(w * s)), max(8, round(h * s))),
                      interpolation=cv2.INTER_AREA)


class Describer:
    """One video's copy descriptors, from frames handed over as they are decoded (in any
    order); the classifier's served model computes them beside the labels' batches.
    ``flipped``: a reference's second view; ``inner``: a query's inner pictures."""

    def __init__(self, classifier: Classifier, step_s: float, *, flipped: bool = False,
                 inner: bool = False) -> None:
        self.classifier = classifier
        self.step_s = step_s
        self.whole = ClassifyJob(classifier)
        self.flipped = ClassifyJob(classifier) if flipped else None
        self.inner = inner
        self.boxes: list[Box] | None = None if inner else []
        self.views: list[ClassifyJob] = []
        self._waiting: list[tuple[int, float, np.ndarray]] = []
        self._first = 0  # frames of index below DECIDE_AFTER among those waiting

    def add(self, frame: Frame) -> None:
        small = shrunk(frame.rgb, WORK_SIDE)
        self.whole.add_image(frame.index, frame.time_s, squash(small))
        if self.flipped is not None:
            self.flipped.add_image(frame.index, frame.time_s, squash(small[:, ::-1]))
        if self.boxes is None:
            self._waiting.append((frame.index, frame.time_s, small))
            if frame.index < DECIDE_AFTER:
                self._first += 1
            if self._first == DECIDE_AFTER:
                self._decide()
        else:
            self._add_views(frame.index, frame.time_s, small)

    def _decide(self) -> None:
        """Find the inner pictures in the video's first frames (by their place in it, not
        by when they arrived: a video decoded in segments hands its frames over in an
        order that varies from run to run, and so would the pictures found)."""
        self._waiting.sort(key=lambda item: item[0])
        first = [small for _, _, small in self._waiting[:DECIDE_AFTER]]
        self.boxes = inner_pictures(first) if first else []
        self.views = [ClassifyJob(self.classifier) for _ in self.boxes]
        for index, time_s, small in self._waiting:
            self._add_views(index, time_s, small)
        self._waiting = []

    def _add_views(self, index: int, time_s: float, small: np.ndarray) -> None:
        for (x0, y0, x1, y1), job in zip(self.boxes or [], self.views, strict=True):
            job.add_image(index, time_s, squash(small[y0:y1, x0:x1]))

    def result(self) -> CopyDescriptors:
        if self.boxes is None:
            self._decide()
        jobs = [self.whole, *([self.flipped] if self.flipped else []), *self.views]
        feats = [_normalised(job.result().features) for job in jobs]
        return CopyDescriptors(self.step_s, feats[0], tuple(feats[1:]))


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


# inner pictures ----------------------------------------------------------------------


def _small_grey(frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
    h, w = frames[0].shape[:2]
    s = VIEW_SIDE / max(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    return [cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA),
                         cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames], s


def _black_box(frames: Sequence[np.ndarray]) -> tuple[int, int, int, int]:
    """Inside black bars: rows and columns never brighter than 40 are trimmed."""
    h, w = frames[0].shape[:2]
    brightest = np.max([f.max(axis=2) for f in frames[:: max(1, len(frames) // 8)]], axis=0)
    rows = np.flatnonzero(brightest.max(axis=1) > 40)
    cols = np.flatnonzero(brightest.max(axis=0) > 40)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, w, h
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _detail_box(grey: Sequence[np.ndarray], s: float,
                size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Inside flat or blurred bars: edge rows and columns with under a fifth of the
    picture's detail (95th percentile of the mean |Laplacian| per row or column)."""
    lap = np.mean([np.abs(cv2.Laplacian(g, cv2.CV_32F)) for g in grey], axis=0)

    def span(profile: np.ndarray) -> tuple[int, int]:
        idx = np.flatnonzero(profile > 0.2 * np.percentile(profile, 95))
        return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, len(profile))

    y0, y1 = span(lap.mean(axis=1))
    x0, x1 = span(lap.mean(axis=0))
    w, h = size
    return round(x0 / s), round(y0 / s), min(w, round(x1 / s)), min(h, round(y1 / s))


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    best = np.zeros(mask.shape[1], int)
    run = np.zeros(mask.shape[1], int)
    for row in mask:
        run = np.where(row, run + 1, 0)
        best = np.maximum(best, run)
    return best


def _edge_box(grey: Sequence[np.ndarray], s: float,
              size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """A picture inside the picture: the rectangle with three or four sides inside the
    frame that are straight edges staying put in every sampled frame (mean |Sobel| over
    time above a 10-grey-level step), the most such sides first."""
    ex = np.mean([np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)) for g in grey], axis=0)
    ey = np.mean([np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) for g in grey], axis=0)
    thr = 40.0
    sh, sw = ex.shape

    def lines(support: np.ndarray, n: int) -> list[int]:
        peaks = [i for i in range(2, n - 2) if support[i] >= 0.25
                 and support[i] >= support[i - 1] and support[i] >= support[i + 1]]
        peaks.sort(key=lambda i: -support[i])
        kept: list[int] = []
        for i in peaks:
            if all(abs(i - k) > 3 for k in kept):
                kept.append(i)
        return kept[:6]

    xs = [0, *lines(_longest_runs(ex > thr) / sh, sw), sw]
    ys = [0, *lines(_longest_runs((ey > thr).T) / sw, sh), sh]
    best: tuple[int, float, tuple[int, int, int, int]] | None = None
    for i, x0 in enumerate(xs):
        for x1 in xs[i + 1:]:
            for j, y0 in enumerate(ys):
                for y1 in ys[j + 1:]:
                    if (x1 - x0 < 0.35 * sw or y1 - y0 < 0.2 * sh
                            or (x1 - x0) * (y1 - y0) < 0.2 * sw * sh):
                        continue
                    sides = [float((ex[y0:y1, max(0, x - 1):x + 2].max(axis=1) > thr).mean())
                             for x in (x0, x1) if 0 < x < sw]
                    sides += [float((ey[max(0, y - 1):y + 2, x0:x1].max(axis=0) > thr).mean())
                              for y in (y0, y1) if 0 < y < sh]
                    if len(sides) < 3 or min(sides) < 0.6:
                        continue
                    key = (len(sides), sum(sides) / len(sides), (x0, y0, x1, y1))
                    if best is None or key[:2] > best[:2]:
                        best = key
    if best is None:
        return None
    x0, y0, x1, y1 = best[2]
    w, h = size
    return round(x0 / s), round(y0 / s), min(w, round(x1 / s)), min(h, round(y1 / s))


def inner_pictures(frames: Sequence[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of pictures inside the frame, each at least 15% and at most
    90% of it, no two alike."""
    h, w = frames[0].shape[:2]
    grey, s = _small_grey(frames)
    found: list[tuple[int, int, int, int]] = []
    for box in (_black_box(frames), _detail_box(grey, s, (w, h)), _edge_box(grey, s, (w, h))):
        if box is None:
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        if not 0.15 * w * h <= area <= 0.9 * w * h:
            continue
        if any(max(abs(a - b) for a, b in zip(box, other, strict=True)) < 0.04 * max(w, h)
               for other in found):
            continue
        found.append(box)
    return found


def align(sim: np.ndarray, ctx_weight: float,
          min_path: int) -> tuple[float, float, float, int, float]:
    """(score, query start, reference start, length, speed) of the best straight path
    through ``sim`` (query frames x reference frames), in frames.

    The score is the best mean along a path of at least ``min_path`` frames (less
    ``ctx_weight`` times each query frame's median similarity to the reference); a speed
    other than 1 must do better by 0.005. The copy's rows, start and speed are then read
    from the best cells beside that path (below)."""
    nq, nr = sim.shape
    ctx = np.median(sim, axis=1) * ctx_weight
    best_key = (-9.0, 0)
    best: tuple[float, np.ndarray, np.ndarray, int, float] | None = None
    qi = np.arange(nq)
    for v in SPEEDS:
        penalty = 0.0 if abs(v - 1.0) < 1e-6 else 0.005
        # every path at this speed at once: one row per offset b (reference frame of
        # query frame i: round(v * i + b)); a window counts only where all its cells lie
        # inside the matrix
        offsets = np.arange(-int(v * nq) - 1, nr)
        cols = np.round(v * qi[None, :] + offsets[:, None]).astype(int)
        inside = (cols >= 0) & (cols < nr)
        vals = np.where(inside, sim[qi[None, :], np.clip(cols, 0, nr - 1)] - ctx[None, :], 0.0)
        csum = np.concatenate([np.zeros((len(offsets), 1)), np.cumsum(vals, axis=1)], axis=1)
        count = np.concatenate([np.zeros((len(offsets), 1), int),
                                np.cumsum(inside, axis=1)], axis=1)
        # a window of 2 * min_path or more splits into two of min_path or more, one of
        # them with a mean at least its own: the best mean is among these lengths
        for length in range(min_path, min(2 * min_path, nq + 1)):
            means = np.where(count[:, length:] - count[:, :-length] == length,
                             (csum[:, length:] - csum[:, :-length]) / length, -np.inf)
            at = int(np.argmax(means))
            row, start = divmod(at, means.shape[1])
            if not np.isfinite(means[row, start]):
                continue
            key = (float(means[row, start]) - penalty, length)
            if key[0] > best_key[0] + 1e-9 or (abs(key[0] - best_key[0]) <= 1e-9
                                               and length > best_key[1]):
                ok = inside[row]
                first = int(np.argmax(ok))  # the path's first row inside the matrix
                best_key, best = key, (key[0], qi[ok], cols[row][ok], start - first,
                                       float(v))
    if best is None:
        return -9.0, 0.0, 0.0, 0, 1.0
    score, i, rr, j, v = best
    # the copy: the rows along that path, walked back and on from the window while each
    # row's best cell beside the path (one reference frame either way) stays above halfway
    # between the path's best and the matrix's lowest value (unrelated footage)
    near = [_peak_near(sim, int(i[a]), int(rr[a])) for a in range(len(i))]
    floor = (max(value for _, value in near) + float(sim.min())) / 2
    k = j
    while k > 0 and near[k - 1][1] >= floor:
        k -= 1
    end = j
    while end + 1 < len(i) and near[end + 1][1] >= floor:
        end += 1
    rows = i[k:end + 1].astype(float)
    where = np.array([near[a][0] for a in range(k, end + 1)])
    if len(rows) >= min_path:  # the speed the copy's rows show, within the searched range
        v = float(np.clip(np.polyfit(rows, where, 1)[0], SPEEDS[0], SPEEDS[-1]))
    start = float(np.median(where - v * rows)) + v * rows[0]
    return score, float(rows[0]), max(0.0, float(start)), end - k + 1, round(v, 2)


def _peak_near(sim: np.ndarray, row: int, col: int) -> tuple[float, float]:
    """(position, value) of the best of ``sim[row]`` within one column of ``col``, the
    position refined below a column by a parabola through it and its neighbours."""
    nr = sim.shape[1]
    lo, hi = max(0, col - 1), min(nr, col + 2)
    c = lo + int(np.argmax(sim[row, lo:hi]))
    value = float(sim[row, c])
    if 0 < c < nr - 1:
        left, right = float(sim[row, c - 1]), float(sim[row, c + 1])
        curve = left - 2 * value + right
        if curve < 0:
            return c + float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5)), value
    return float(c), value


# searching ---------------------------------------------------------------------------


@functools.cache
def _projection() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        with np.load(PROJECTION_FILE) as z:
            mean, components = z["mean"].astype(np.float32), z["components"].astype(np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"the copy search projection {PROJECTION_FILE} is unreadable "
                         f"(reinstall reelscope): {exc}") from exc
    digest = hashlib.sha256(mean.tobytes() + components.tobytes()).hexdigest()[:16]
    return mean, components, digest


def search_signature() -> str:
    """What the search vectors depend on: the descriptors' format and the projection."""
    return f"copy{FORMAT}-{_projection()[2]}"


def projected(x: np.ndarray) -> np.ndarray:
    """Descriptors (n, 1280) in the search space (n, SEARCH_DIM), normalised."""
    mean, components, _ = _projection()
    return _normalised((x.astype(np.float32) - mean) @ components.T)


def key_vectors(ref: CopyDescriptors) -> np.ndarray:
    """A reference's key frames, every view, in the search space."""
    out: list[np.ndarray] = []
    for view in ref.views():
        last: np.ndarray | None = None
        for row in projected(view):
            if last is None or float(row @ last) < KEY_SIMILARITY:
                out.append(row)
                last = row
    return np.stack(out) if out else np.zeros((0, SEARCH_DIM), np.float32)


def query_vectors(query: CopyDescriptors) -> np.ndarray:
    """A query's frames to search with: one a second, at most QUERY_FRAMES spread over
    it, every view."""
    every = max(1, round(1.0 / query.step_s))
    rows = np.arange(0, len(query.whole), every)
    if len(rows) > QUERY_FRAMES:
        rows = rows[np.linspace(0, len(rows) - 1, QUERY_FRAMES).round().astype(int)]
    return np.concatenate([projected(v[rows]) for v in query.views()]) if len(rows) else \
        np.zeros((0, SEARCH_DIM), np.float32)


def rank_candidates(hits: Sequence[Sequence[tuple[int, float]]], limit: int) -> list[int]:
    """The references found nearest to a query's frames, at most ``limit``: ``hits``
    holds, per search vector, its neighbours' (reference id, similarity); a reference
    ranks by the sum over the search vectors of its best similarity among them."""
    total: dict[int, float] = {}
    for row in hits:
        best: dict[int, float] = {}
        for key, sim in row:
            if sim > best.get(key, -2.0):
                best[key] = sim
        for key, sim in best.items():
            total[key] = total.get(key, 0.0) + sim
    return sorted(total, key=lambda key: -total[key])[:limit]


# matching ----------------------------------------------------------------------------


def change_agreement(query_views: Sequence[np.ndarray], ref_views: Sequence[np.ndarray],
                     q0: float, r0: float, length: int, speed: float) -> float:
    """How alike the two videos change along the path (query row ``q0`` on reference row
    ``r0``, ``length`` rows at ``speed``): the mean cosine of each side's descriptors less
    their mean over the path, the best pair of views. About 0 for another stretch of the
    same scene, 0.2-1 for a copy."""
    rows = np.arange(round(q0), round(q0) + length)
    cols = np.round(r0 + speed * (rows - q0)).astype(int)
    ok = (cols >= 0) & (cols < len(ref_views[0])) & (rows < len(query_views[0]))
    rows, cols = rows[ok], cols[ok]
    if len(rows) < 2:
        return 0.0
    qs = [_normalised(v[rows] - v[rows].mean(axis=0)) for v in query_views]
    rs = [_normalised(v[cols] - v[cols].mean(axis=0)) for v in ref_views]
    return max(float(np.mean(np.sum(a * b, axis=1))) for a in qs for b in rs)


def match(query: CopyDescriptors, ref: CopyDescriptors,
          query_views: Sequence[np.ndarray] | None = None) -> Alignment:
    """How much of ``ref`` ``query`` shows, where and at which speed. ``query_views``:
    ``query.views()``, when the caller matches one query against many references."""
    min_path = round(MIN_PATH_S / query.step_s)
    if len(query.whole) < min_path or len(ref.whole) < min_path:
        return NO_MATCH
    qv = query.views() if query_views is None else list(query_views)
    rv = ref.views()
    sim = np.max([a @ b.T for a in qv for b in rv], axis=0)
    path, q0, r0, length, speed = align(sim, CTX_WEIGHT, min_path)
    raw = path + change_agreement(qv, rv, q0, r0, length, speed)
    score = float(np.clip((raw - UNRELATED_SCORE) / (COPY_SCORE - UNRELATED_SCORE), 0, 1))
    return Alignment(score, q0 * query.step_s, r0 * ref.step_s, length * query.step_s, speed)
