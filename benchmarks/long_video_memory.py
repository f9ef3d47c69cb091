"""Peak memory of whole ``reelscope analyze`` runs on the CPU path, for clips of different
lengths (and, for a baseline, another checkout's code on the same clips).

    python scripts/make_realistic.py /tmp/long600.mp4 --seconds 600
    python benchmarks/long_video_memory.py /tmp/real15.mp4 /tmp/long600.mp4 \
        [--baseline-src /tmp/old-checkout] --out benchmarks/results-long-video-memory-....json

Each run is a new process (``python -m reelscope analyze CLIP --json --force``); its
resident memory is read from /proc every 0.2 s and its peak (``VmHWM``) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe, stamp

ROOT = Path(__file__).resolve().parent.parent


def peak_run(clip: Path, src: Path, cache: Path, db: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSCOPE_")}
    env.update(PYTHONPATH=str(src), REELSCOPE_CACHE_DIR=str(cache), REELSCOPE_DB=str(db))
    start = time.perf_counter()
    # the report goes to a file: a pipe not read while the run is watched would fill up
    # and stop the analysis at its last line
    with tempfile.TemporaryFile("w+") as report_file, \
            tempfile.TemporaryFile("w+") as errors_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reelscope", "analyze", str(clip), "--json", "--force",
             "--max-duration-s", "3600", "--max-file-mb", "4000"],
            stdout=report_file, stderr=errors_file, text=True, env=env, cwd=src)
        peak_kb, samples = 0, []
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
                rss = int(fields["VmRSS"].split()[0])
                peak_kb = max(peak_kb, int(fields["VmHWM"].split()[0]), rss)
                samples.append((round(time.perf_counter() - start, 1), rss // 1024))
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        report_file.seek(0)
        errors_file.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"analyze failed: {errors_file.read().strip().splitlines()[-1:]}")
        report = json.loads(report_file.read())
    return {"clip": clip.name, "duration_s": report["video"]["duration_s"],
            "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(peak_kb / 1024), "timings_s": report["timings_s"],
            "captions": len(report["ocr"]), "transcript_words": len(
                report["transcript"]["text"].split()),
            "rss_mib_over_time": samples[:: max(1, len(samples) // 60)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", type=Path, nargs="+")
    ap.add_argument("--src", type=Path, default=ROOT, help="the checkout measured")
    ap.add_argument("--baseline-src", type=Path, help="a checkout whose code is the baseline")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {**stamp(), "runs": []}
    print(describe(result["machine"]), flush=True)
    sources = [(f"measured {args.src}", args.src)]
    if args.baseline_src:
        sources.append((f"baseline {args.baseline_src}", args.baseline_src))
    with tempfile.TemporaryDirectory() as tmp:
        for label, src in sources:
            cache = Path(tmp) / f"cache-{len(result['runs'])}"
            # engines and prepared models built once, outside the measured runs
            peak_run(ROOT / "samples" / "sample.mp4", src, cache, Path(tmp) / "db.sqlite")
            for clip in args.clips:
                run = {"code": label, **peak_run(clip, src, cache, Path(tmp) / "db.sqlite")}
                result["runs"].append(run)
                print(f"{label}: {clip.name} ({run['duration_s']:.0f} s): peak "
                      f"{run['peak_rss_mib']} MiB, {run['wall_s']} s", flush=True)
                if args.out:
                    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
