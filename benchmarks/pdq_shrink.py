"""PDQ frame hashes on the frames as sampled against frames shrunk first (what
``tasks/fingerprint.frame_hashes`` does): CPU time and how many of the 256 bits change.

    python benchmarks/pdq_shrink.py --clip .gpu-e2e/clip-1080p.mp4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pdqhash  # noqa: E402

from reelscope.tasks.fingerprint import _shrunk  # noqa: E402
from reelscope.video.decode import sample_frames  # noqa: E402
from reelscope.video.media import Limits, probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    info = probe(args.clip, Limits(max_duration_s=3600, max_side_px=8192, max_file_mb=4096))
    frames = [f.rgb for f in sample_frames(info, 2.0)]

    def hashes(shrink: bool) -> list[np.ndarray]:
        return [pdqhash.compute(_shrunk(rgb) if shrink else rgb)[0] for rgb in frames]

    cpu: dict[bool, float] = {}
    for shrink in (False, True):
        times = []
        for _ in range(args.runs):
            t = time.process_time()
            hashes(shrink)
            times.append(time.process_time() - t)
        cpu[shrink] = statistics.median(times)
    bits = [int((a != b).sum()) for a, b in zip(hashes(False), hashes(True), strict=True)]
    print(f"{len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}: "
          f"as sampled {cpu[False]:.3f} CPU s, shrunk {cpu[True]:.3f} CPU s "
          f"({cpu[False] / cpu[True]:.1f}x); bits changed mean {np.mean(bits):.1f}, "
          f"max {max(bits)} of 256")


if __name__ == "__main__":
    main()
