"""Decoding one clip's sampled frames with 1, 2, 4, 8 segments at once (no models).

    python benchmarks/decode_segments.py --clip .gpu-e2e/clip-1080p.mp4 [--out results.json]

Median of ``--runs`` decodes per setting, after one warm-up; the frames are checked to
be the same as one decoder's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from reelscope.video.media import Limits, probe  # noqa: E402
from reelscope.video.segments import keyframes, plan, sample_frames_parallel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--segments", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    info = probe(args.clip, Limits(max_duration_s=3600, max_side_px=8192, max_file_mb=4096))
    keys = keyframes(info)
    reference = list(sample_frames_parallel(info, args.fps, 1))
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu_cores": os.cpu_count(),
           "clip": args.clip.name, "keyframes": len(keys), "frames": len(reference), "rows": []}
    for n in args.segments:
        times = []
        for i in range(args.runs + 1):
            t = time.perf_counter()
            frames = list(sample_frames_parallel(info, args.fps, n))
            if i:
                times.append(time.perf_counter() - t)
        same = len(frames) == len(reference) and all(
            a.time_s == b.time_s and np.array_equal(a.rgb, b.rgb)
            for a, b in zip(frames, reference, strict=True))
        row = {"segments_asked": n, "segments": len(plan(keys, info.duration_s, n)),
               "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
               "same_frames": same}
        print(row, flush=True)
        out["rows"].append(row)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
