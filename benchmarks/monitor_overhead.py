"""What the monitor costs per analysis: the sample clip analyzed warm, monitor on and off,
alternating in one process each (same models, same machine, same run).

    .venv/bin/python benchmarks/monitor_overhead.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from machine import stamp

from reelscope.config import Settings
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.store.store import Store

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", type=Path, default=ROOT / "samples" / "sample.mp4")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        analyzers = {}
        for monitor in (True, False):
            s = Settings.from_env({}, db=f"{tmp}/{monitor}.db", cache_dir=f"{tmp}/cache",
                                  monitor=monitor)
            analyzers[monitor] = Analyzer(s, Store(s.database_url), Runtime(s))
            analyzers[monitor].analyze(args.clip, force=True)  # load and warm
        times: dict[bool, list[float]] = {True: [], False: []}
        labels: dict[bool, list[float]] = {True: [], False: []}
        ocr: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat):
            for monitor, analyzer in analyzers.items():
                start = time.perf_counter()
                report = analyzer.analyze(args.clip, force=True).report
                times[monitor].append(time.perf_counter() - start)
                labels[monitor].append(report.timings_s["labels"])
                ocr[monitor].append(report.timings_s["ocr"])
    result = {
        **stamp(),
        "clip": args.clip.name,
        **{
            ("monitor_on" if m else "monitor_off"): {
                "total_s_median": round(statistics.median(times[m]), 3),
                "labels_stage_s_median": round(statistics.median(labels[m]), 3),
                "ocr_stage_s_median": round(statistics.median(ocr[m]), 3),
            }
            for m in (True, False)
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
