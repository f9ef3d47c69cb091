"""How long a process takes to get its runtime's models ready: the first process on a
machine builds the engines into the cache; the next ones load them (the torch backend
compiles nothing again: every Inductor graph is a cache hit).

    python benchmarks/runtime_load.py --device cuda --processes 2 --out results.json

Each process is new (``--cache`` empty at the start unless ``--keep-cache``); for each
model it records the seconds to have it served, its backend, whether its engine file
was there already, and the torch runner's Inductor cache hits and misses; then the
seconds of one analysis of the sample (``--clip``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe, stamp

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"


def child(device: str, clip: Path) -> dict[str, Any]:
    start = time.perf_counter()
    from reelscope.pipeline.runtime import Runtime

    imported = time.perf_counter() - start
    engines = Path(os.environ["REELSCOPE_CACHE_DIR"]) / "engines"
    there = {p.name for p in engines.glob("*.engine")} if engines.is_dir() else set()
    models: dict[str, Any] = {}
    with Runtime(device=device) as rt:
        for name in ("classifier", "ocr_models", "text_encoder", "speech"):
            t = time.perf_counter()
            loaded = getattr(rt, name)
            models[name] = {"seconds": round(time.perf_counter() - t, 2)}
            for served in _served(loaded):
                runner = getattr(served.runner, "primary", served.runner)
                models[name].setdefault("served", []).append({
                    "model": served.name, "backend": served.use.backend,
                    "precision": served.use.precision,
                    "engine_was_there": any(n.startswith(f"{served.name}-") for n in there),
                    "inductor_cache_hits": getattr(runner, "cache_hits", None),
                    "inductor_cache_misses": getattr(runner, "cache_misses", None),
                    "runner_load_s": round(getattr(runner, "load_seconds", 0.0), 2),
                })
        ready = time.perf_counter() - start
        t = time.perf_counter()
        report = rt.analyze(clip, save=False)
        analysis = time.perf_counter() - t
    return {"import_s": round(imported, 2), "models": models, "ready_s": round(ready, 2),
            "first_analysis_s": round(analysis, 2), "captions": [e.text for e in report.ocr],
            "engines": {k: f"{v.backend} {v.precision} {v.device}"
                        for k, v in report.engines.items()}}


def _served(loaded: Any) -> list[Any]:
    items = loaded if isinstance(loaded, tuple) else (loaded,)
    return [getattr(x, "served", x) for x in items if hasattr(getattr(x, "served", x), "use")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--clip", type=Path, default=SAMPLE)
    ap.add_argument("--cache", type=Path, default=None, help="default: a new temporary one")
    ap.add_argument("--keep-cache", action="store_true", help="do not empty --cache first")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.device, args.clip)))
        return
    if args.out is None:
        ap.error("--out is required")
    cache = args.cache or Path(tempfile.mkdtemp(prefix="rs-load-"))
    if not args.keep_cache and cache.exists():
        shutil.rmtree(cache / "engines", ignore_errors=True)
    runs = []
    for i in range(args.processes):
        env = {**os.environ, "REELSCOPE_CACHE_DIR": str(cache)}
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", "--device", args.device,
                               "--clip", str(args.clip)], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"process {i + 1} failed:\n{proc.stderr[-3000:]}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run["process"] = i + 1
        run["wall_s"] = round(time.perf_counter() - t, 2)
        runs.append(run)
        print(json.dumps(run), flush=True)
    out = {"benchmark": "runtime_load", **stamp(), "device": args.device,
           "clip": str(args.clip), "runs": runs}
    args.out.write_text(json.dumps(out, indent=2))
    print(describe(out["machine"]))


if __name__ == "__main__":
    main()
