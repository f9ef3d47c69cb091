"""Decoding one clip's sampled frames with 1, 2, 4, 8 segments at once (no models).

    python benchmarks/decode_segments.py --clip .gpu-e2e/clip-1080p.mp4 [--out results.json]
    python benchmarks/decode_segments.py --clip clip.mp4 --device cuda:0  # NVDEC

Median wall time and CPU time of ``--runs`` decodes per setting, after one warm-up. On the
CPU the baseline row is one decoder decoding every frame (no frame skipped); on a GPU
(``--device cuda:N``: the GPU's video engines, a decoder per segment) it is one decoder.
Every row's frames are checked to be the same as the baseline's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from machine import stamp  # noqa: E402

from reelscope.video.decode import Frame, index_video, sample_frames  # noqa: E402
from reelscope.video.media import Limits, probe  # noqa: E402
from reelscope.video.nvdec import nvdec_frames  # noqa: E402
from reelscope.video.segments import decode_frames, plan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--segments", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda:N for NVDEC")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    info = probe(args.clip, Limits(max_duration_s=3600, max_side_px=8192, max_file_mb=4096))
    found = index_video(info, 1.0 / args.fps)
    keys = found.keyframes if found is not None else []
    gpu = args.device != "cpu"

    def every_frame() -> list[Frame]:
        return list(sample_frames(info, args.fps, skip=False))

    def segments(n: int) -> list[Frame]:
        if gpu:
            assert found is not None
            frames = nvdec_frames(info, found, args.device, n)
        else:
            frames = decode_frames(info, args.fps, n)
        return sorted(frames, key=lambda f: f.index)

    reference = segments(1) if gpu else every_frame()
    out = {**stamp(), "clip": args.clip.name, "device": args.device, "keyframes": len(keys),
           "frames": len(reference), "rows": []}
    runs = [] if gpu else [("baseline: one decoder, every frame decoded", 1, every_frame)]
    runs += [(f"{n} segments" + ("" if gpu else ", unneeded frames skipped"), n,
              lambda n=n: segments(n)) for n in args.segments]
    for name, n, decode in runs:
        walls, cpus = [], []
        for i in range(args.runs + 1):
            t, c = time.perf_counter(), time.process_time()
            frames = decode()
            if i:
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
        same = len(frames) == len(reference) and all(
            a.time_s == b.time_s and np.array_equal(a.rgb, b.rgb)
            for a, b in zip(frames, reference, strict=True))
        row = {"decode": name, "segments": len(plan(keys, info.duration_s, n)),
               "median_s": round(statistics.median(walls), 4), "min_s": round(min(walls), 4),
               "cpu_median_s": round(statistics.median(cpus), 4), "same_frames": same}
        print(row, flush=True)
        out["rows"].append(row)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
