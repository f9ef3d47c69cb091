"""Search latency of reelscope's copy index against library size (issue: copy detection
that survives real edits): the index class and the query that ``Store.library`` runs.

    .venv/bin/python benchmarks/copy_index.py --out results.json

Synthetic descriptors (the issue allows them for the size sweep), in the search space
(``copydetect.SEARCH_DIM``, 256): each reference is 5 key frames in 2 views (as is and
flipped), 10 vectors (the copy benchmark's real references, 5-20 s long, have 2 to 20
key vectors, both views together, 7 on average), each a
random walk on the unit sphere, so that a reference's frames resemble each other as real
footage does. A query is one reference's frames with noise (cosine about 0.9 to the
originals): ``copydetect.QUERY_FRAMES`` frames in 2 views, each searched for its
``store.COPY_NEIGHBOURS`` nearest key frames, ranked by ``copydetect.rank_candidates``
into at most ``store.COPY_CANDIDATES`` references. Index: ``reelscope.store.vectors.
HnswIndex`` (usearch HNSW, cosine, int8 vectors). Reported per size: build time, the
index's memory, query latency (searches and ranking; median and p95) and whether the true
reference is among the candidates; the baseline, measured in the same run: the same query
answered exactly without an index (every key frame compared, float32 numpy, 20 queries).
``--raw`` measures the earlier design point instead
(usearch directly, 10 frames x 2 views, 16 neighbours, one thread, any dimension).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from machine import stamp  # noqa: E402

from reelscope.store.store import COPY_CANDIDATES, COPY_NEIGHBOURS  # noqa: E402
from reelscope.store.vectors import HnswIndex  # noqa: E402
from reelscope.tasks.copydetect import QUERY_FRAMES as PRODUCT_QUERY_FRAMES  # noqa: E402
from reelscope.tasks.copydetect import rank_candidates  # noqa: E402

KEYFRAMES = 5
VIEWS = 2
QUERY_FRAMES = 10
NEIGHBOURS = 16
EXACT_QUERIES = 20


def references(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(n, KEYFRAMES * VIEWS, dim) unit vectors: per reference a random walk."""
    start = rng.standard_normal((n, 1, dim)).astype(np.float32)
    steps = 0.35 * rng.standard_normal((n, KEYFRAMES * VIEWS - 1, dim)).astype(np.float32)
    walk = np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)
    return walk / np.linalg.norm(walk, axis=2, keepdims=True)


def query(refs: np.ndarray, frames: int, rng: np.random.Generator
          ) -> tuple[int, np.ndarray]:
    """A random reference and a query made of ``frames`` x VIEWS of its key frames with
    noise (cosine about 0.9 to the originals)."""
    n, _, dim = refs.shape
    truth = int(rng.integers(n))
    picks = refs[truth, rng.integers(0, KEYFRAMES * VIEWS, frames * VIEWS)]
    noisy = picks + 0.45 / np.sqrt(dim) * rng.standard_normal(picks.shape)
    return truth, (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


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
            truth, noisy = query(refs, QUERY_FRAMES, rng)
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


def run_product(sizes: list[int], queries: int) -> list[dict[str, object]]:
    rows = []
    rng = np.random.default_rng(7)
    dim = 256
    for n in sizes:
        refs = references(n, dim, rng)
        index = HnswIndex(dim)
        start = time.perf_counter()
        for lo in range(0, n, 8192):
            block = refs[lo:lo + 8192]
            index.add(np.repeat(np.arange(lo, lo + len(block)), KEYFRAMES * VIEWS).tolist(),
                      block.reshape(-1, dim))
        build_s = time.perf_counter() - start
        times, found = [], 0
        for _ in range(queries):
            truth, noisy = query(refs, PRODUCT_QUERY_FRAMES, rng)
            start = time.perf_counter()
            candidates = rank_candidates(index.search(noisy, COPY_NEIGHBOURS), COPY_CANDIDATES)
            times.append(time.perf_counter() - start)
            found += truth in candidates
        # the baseline, in the same run: the same query without an index, every key
        # frame compared (float32, numpy), on a few queries
        flat = refs.reshape(-1, dim)
        exact_times, exact_found = [], 0
        for _ in range(EXACT_QUERIES):
            truth, noisy = query(refs, PRODUCT_QUERY_FRAMES, rng)
            start = time.perf_counter()
            sims = noisy @ flat.T
            top = np.argpartition(-sims, COPY_NEIGHBOURS, axis=1)[:, :COPY_NEIGHBOURS]
            hits = [[(int(k) // (KEYFRAMES * VIEWS), float(sims[i, k])) for k in row]
                    for i, row in enumerate(top)]
            candidates = rank_candidates(hits, COPY_CANDIDATES)
            exact_times.append(time.perf_counter() - start)
            exact_found += truth in candidates
        row = {"references": n, "vectors": n * KEYFRAMES * VIEWS, "dim": dim, "dtype": "i8",
               "searches_per_query": PRODUCT_QUERY_FRAMES * VIEWS,
               "neighbours": COPY_NEIGHBOURS, "candidates": COPY_CANDIDATES,
               "build_s": round(build_s, 1),
               "memory_mb": round(index._index.memory_usage / 2**20),
               "query_ms_median": round(1e3 * float(np.median(times)), 2),
               "query_ms_p95": round(1e3 * float(np.percentile(times, 95)), 2),
               "true_reference_among_candidates": f"{found}/{queries}",
               "exact_query_ms_median": round(1e3 * float(np.median(exact_times)), 1),
               "exact_true_reference_among_candidates": f"{exact_found}/{EXACT_QUERIES}"}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--raw", nargs="+", metavar="DIM:REFERENCES",
                        help="the earlier design measurement instead, e.g. 256:1000 1280:10000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.raw:
        plan = [(int(d), int(n)) for d, n in (item.split(":") for item in args.raw)]
        rows = run(plan, args.queries)
        shape = {"keyframes": KEYFRAMES, "views": VIEWS, "query_frames": QUERY_FRAMES,
                 "neighbours": NEIGHBOURS}
    else:
        rows = run_product(args.sizes, args.queries)
        shape = {"keyframes": KEYFRAMES, "views": VIEWS, "query_frames": PRODUCT_QUERY_FRAMES}
    args.out.write_text(json.dumps({**stamp(), **shape, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
