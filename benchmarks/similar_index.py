"""``similar`` against library size (issue: copy detection that survives real edits, the
index for ``similar``): reelscope's ``Store.similar`` on a SQLite database of 1k-100k
videos, against the scan of every row it did before, in the same run.

    .venv/bin/python benchmarks/similar_index.py --out results.json   # ~10 min, ~1 GB in /tmp

Synthetic embeddings (the issue allows them for the size sweep): each video a random unit
visual (1280-d) and text (512-d) vector, written straight into the tables (with their
``index_log`` rows, as ``Store.save`` writes them). A query is a stored video's
embeddings with noise (cosine about 0.9), its 5 nearest asked for. Reported per size: the
first call (it builds the indexes from the rows), the median and p95 of 50 calls after,
whether the video the query was made from came first, how many of the exact top 5 (numpy
over all vectors; past the first, random vectors are near ties) came back, and the
previous scan's median of 5 calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from machine import stamp  # noqa: E402

from reelscope.store.schema import IndexLogRow, VideoRow  # noqa: E402
from reelscope.store.store import VISUAL_WEIGHT, Store  # noqa: E402

K = 5
QUERIES = 50


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def fill(store: Store, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray,
                                                                   np.ndarray]:
    ids = [f"{i + 1:016x}" for i in range(n)]
    visual = unit(rng.standard_normal((n, 1280)))
    text = unit(rng.standard_normal((n, 512)))
    with store.session() as s:
        for lo in range(0, n, 2000):
            rows = [{"id": vid, "sha256": vid * 4, "filename": "", "duration_s": 10.0,
                     "report_json": "{}", "visual_embedding": visual[i].tobytes(),
                     "text_embedding": text[i].tobytes()}
                    for i, vid in enumerate(ids[lo:lo + 2000], start=lo)]
            s.execute(insert(VideoRow), rows)
            s.execute(insert(IndexLogRow), [{"name": "video", "key": r["id"]} for r in rows])
    return ids, visual, text


def scan(store: Store, visual: np.ndarray, text: np.ndarray, k: int) -> list[str]:
    """What Store.similar did before the index: read and score every row."""
    with store.session() as s:
        rows = s.execute(select(VideoRow.id, VideoRow.visual_embedding,
                                VideoRow.text_embedding)).all()
    scored = []
    for vid, vis_blob, text_blob in rows:
        score = VISUAL_WEIGHT * float(np.dot(visual, np.frombuffer(vis_blob, "<f4"))) + (
            1 - VISUAL_WEIGHT) * float(np.dot(text, np.frombuffer(text_blob, "<f4")))
        scored.append((score, vid))
    scored.sort(reverse=True)
    return [vid for _, vid in scored[:k]]


def run(sizes: list[int], out: Path) -> None:
    rng = np.random.default_rng(7)
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{Path(tmp) / 'lib.db'}")
            ids, visual, text = fill(store, n, rng)
            picks = rng.integers(n, size=QUERIES + 1)
            queries = [(unit(visual[i] + 0.45 / np.sqrt(1280) * rng.standard_normal(1280)),
                        unit(text[i] + 0.45 / np.sqrt(512) * rng.standard_normal(512)))
                       for i in picks]
            start = time.perf_counter()
            store.similar(*queries[0], K)
            first_s = time.perf_counter() - start
            times, agree, first = [], 0, 0
            for i, (qv, qt) in zip(picks[1:], queries[1:], strict=True):
                start = time.perf_counter()
                found = store.similar(qv, qt, K)
                times.append(time.perf_counter() - start)
                first += bool(found) and found[0].video_id == ids[i]
                exact = np.argsort(-(VISUAL_WEIGHT * (visual @ qv)
                                     + (1 - VISUAL_WEIGHT) * (text @ qt)))[:K]
                agree += len({f.video_id for f in found} & {ids[i] for i in exact})
            scan_times = []
            for qv, qt in queries[1:6]:
                start = time.perf_counter()
                scan(store, qv, qt, K)
                scan_times.append(time.perf_counter() - start)
            store.close()
        row = {"videos": n, "first_call_s": round(first_s, 2),
               "query_ms_median": round(1e3 * float(np.median(times)), 2),
               "query_ms_p95": round(1e3 * float(np.percentile(times, 95)), 2),
               "own_video_first": f"{first}/{QUERIES}",
               "exact_top5_returned": f"{agree}/{K * QUERIES}",
               "scan_ms_median": round(1e3 * float(np.median(scan_times)), 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out.write_text(json.dumps({**stamp(), "k": K, "queries": QUERIES, "results": rows},
                              indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run(args.sizes, args.out)


if __name__ == "__main__":
    main()
