"""Search latency of an approximate nearest-neighbour index over reference descriptors,
against library size (issue: copy detection that survives real edits). A design
measurement for the index reelscope does not have yet: today every reference is aligned in
turn (``reelscope.tasks.copydetect.match``).

    .venv/bin/python benchmarks/copy_index.py --out results.json

Synthetic descriptors (the issue allows them for the size sweep): each reference is 5
keyframes (one every 2 s of a 10 s clip) in 2 views (as is and flipped), each a random
walk on the unit sphere, so that a reference's frames resemble each other as real footage
does. A query is one reference's frames with noise (cosine about 0.9 to the originals),
10 frames in 2 views: 20 searches of the 16 nearest keyframes, whose references are the
candidates. Index: usearch HNSW (cosine, int8 vectors), built with every core here.
Reported per size and dimension: build time, the index's memory, query latency (all 20
searches; median and p95 of 200 queries, one thread) and whether the true reference is
among the candidates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import stamp

KEYFRAMES = 5
VIEWS = 2
QUERY_FRAMES = 10
NEIGHBOURS = 16


def references(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(n, KEYFRAMES * VIEWS, dim) unit vectors: per reference a random walk."""
    start = rng.standard_normal((n, 1, dim)).astype(np.float32)
    steps = 0.35 * rng.standard_normal((n, KEYFRAMES * VIEWS - 1, dim)).astype(np.float32)
    walk = np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)
    return walk / np.linalg.norm(walk, axis=2, keepdims=True)


def run(plan: list[tuple[int, int]], queries: int) -> list[dict[str, object]]:
    from usearch.index import Index

    rows = []
    rng = np.random.default_rng(7)
    for dim, n in plan:
        refs = references(n, dim, rng)
        flat = refs.reshape(-1, dim)
        owner = np.repeat(np.arange(n), KEYFRAMES * VIEWS)
        index = Index(ndim=dim, metric="cos", dtype="i8")
        start = time.perf_counter()
        index.add(np.arange(len(flat)), flat)
        build_s = time.perf_counter() - start
        times, found = [], 0
        for _ in range(queries):
            truth = int(rng.integers(n))
            picks = refs[truth, rng.integers(0, KEYFRAMES * VIEWS, QUERY_FRAMES * VIEWS)]
            noisy = picks + 0.45 / np.sqrt(dim) * rng.standard_normal(picks.shape)
            noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
            start = time.perf_counter()
            hits = index.search(noisy, NEIGHBOURS, threads=1)
            candidates = set(owner[hits.keys.ravel()].tolist())
            times.append(time.perf_counter() - start)
            found += truth in candidates
        row = {"references": n, "vectors": len(flat), "dim": dim, "dtype": "i8",
               "build_s": round(build_s, 1), "memory_mb": round(index.memory_usage / 2**20),
               "query_ms_median": round(1e3 * float(np.median(times)), 2),
               "query_ms_p95": round(1e3 * float(np.percentile(times, 95)), 2),
               "true_reference_among_candidates": f"{found}/{queries}"}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", nargs="+", default=["256:1000", "256:10000", "256:100000",
                                                     "1280:1000", "1280:10000"],
                        help="DIM:REFERENCES pairs (1280-d at 100k is left out by default: "
                             "1M vectors at about 1 ms each to add, per core, here)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plan = [(int(d), int(n)) for d, n in (item.split(":") for item in args.plan)]
    rows = run(plan, args.queries)
    args.out.write_text(json.dumps({**stamp(), "keyframes": KEYFRAMES, "views": VIEWS,
                                    "query_frames": QUERY_FRAMES, "neighbours": NEIGHBOURS,
                                    "results": rows}, indent=1))


if __name__ == "__main__":
    main()
