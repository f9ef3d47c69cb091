"""``reelscope batch`` with one and with more analysis workers, in one run: clips/s of a
library of distinct copies of one clip, each configuration on a fresh database.

    python benchmarks/batch_scale.py --clip clip.mp4 --copies 12 --out results.json \\
        [--config "local in-flight 1:" ...] [--gpus]

Each configuration is a new ``reelscope batch DIR --json`` process with its settings as
``REELSCOPE_*`` variables. Its wall time includes starting Ray and loading the models
once per worker, so each report's time is recorded too (from the database): the time to
the first, the rate after it, and the rate between the tenth and the ninetieth
percentile of the reports (every worker busy: no start, no drain).
Default configurations: on this machine with 1 and 2 videos in flight, and on a Ray
instance started for the run with 1 and 2 actors (splitting the cores between them);
``--gpus``: a Ray instance with one actor per GPU, using 1 and then every GPU.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from machine import describe, stamp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))
from gpu_e2e import remux_copies  # noqa: E402


def cpu_configs() -> dict[str, dict[str, str]]:
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    return {
        "this machine, 1 in flight": {"BATCH_IN_FLIGHT": "1"},
        "this machine, 2 in flight": {"BATCH_IN_FLIGHT": "2"},
        f"ray local, 1 actor of {cores} CPUs": {
            "RAY": "local", "RAY_ACTORS": "1", "RAY_CPUS_PER_ACTOR": str(cores),
            "BATCH_IN_FLIGHT": "1"},
        f"ray local, 2 actors of {half} CPUs": {
            "RAY": "local", "RAY_ACTORS": "2", "RAY_CPUS_PER_ACTOR": str(half),
            "BATCH_IN_FLIGHT": "1"},
    }


def gpu_configs(in_flight: int) -> dict[str, dict[str, str]]:
    """One GPU actor, then one per GPU; and one per GPU that leaves a core of its share
    to Ray's own processes and the driver."""
    import torch

    count = torch.cuda.device_count()
    configs = {f"ray local, {n} GPU actor(s)": {
        "RAY": "local", "RAY_ACTORS": str(n), "RAY_GPUS_PER_ACTOR": "1",
        "BATCH_IN_FLIGHT": str(in_flight), "DEVICE": "cuda"} for n in (1, count)}
    if count > 1:
        threads = max(1, (os.cpu_count() or 1) // count - 1)
        configs[f"ray local, {count} GPU actors of {threads} threads"] = {
            **configs[f"ray local, {count} GPU actor(s)"], "THREADS": str(threads)}
    return configs


def report_times(url: str, start: float) -> list[float]:
    """Seconds from the run's start to each stored report (the rows' times), in order."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT created_at FROM videos")).scalars().all()
    engine.dispose()
    out = []
    for when in rows:
        when = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
        if when.tzinfo is None:  # SQLite keeps the UTC time without its zone
            when = when.replace(tzinfo=UTC)
        out.append(round(when.timestamp() - start, 3))
    return sorted(out)


def middle_rate(times: list[float]) -> float | None:
    """Reports per second between the tenth and the ninetieth percentile of the reports'
    times: the rate while every worker is busy, without the start (Ray, model loading,
    the first videos finishing together) and the drain (workers running out of videos
    at different times)."""
    if len(times) < 10:
        return None
    first, last = len(times) // 10, len(times) - 1 - len(times) // 10
    return round((last - first) / max(1e-6, times[last] - times[first]), 3)


def run_one(name: str, env_settings: dict[str, str], library: Path, work: Path,
            cache: str) -> dict[str, Any]:
    db = work / f"{len(list(work.glob('*.db')))}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSCOPE_")}
    env.update({f"REELSCOPE_{k}": v for k, v in env_settings.items()},
               REELSCOPE_DB=str(db), REELSCOPE_CACHE_DIR=cache)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "reelscope", "batch", str(library), "--json"],
                          capture_output=True, text=True, env=env)
    wall = time.time() - start
    out: dict[str, Any] = {"config": name, "settings": env_settings,
                           "wall_s": round(wall, 2), "exit": proc.returncode}
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        out["error"] = proc.stderr[-2000:]
        return out
    clips = len(summary["done"])
    times = report_times(f"sqlite:///{db}", start)
    out.update(done=clips, failed=summary["failed"],
               clips_per_s=round(clips / wall, 3),
               first_report_s=times[0] if times else None,
               clips_per_s_middle=middle_rate(times), report_times_s=times)
    if out["first_report_s"] is not None and clips > 1:
        # the steady rate: reports after the first, over the time after it
        out["clips_per_s_after_first"] = round(
            (clips - 1) / max(1e-6, wall - out["first_report_s"]), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, default=ROOT / "samples" / "sample.mp4")
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--gpus", action="store_true")
    ap.add_argument("--in-flight", type=int, default=8, help="per GPU actor, with --gpus")
    ap.add_argument("--cache", default="", help="model cache shared by the runs (prepared "
                    "by a first run when empty)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rs-batch-scale-"))
    library = work / "library"
    library.mkdir()
    remux_copies(args.clip, args.copies, library)
    cache = args.cache or str(work / "cache")
    configs = gpu_configs(args.in_flight) if args.gpus else cpu_configs()
    result: dict[str, Any] = {**stamp(), "clip": {"path": args.clip.name,
                                                  "bytes": args.clip.stat().st_size},
                              "copies": args.copies, "runs": []}
    print(describe(result["machine"]), flush=True)
    # models prepared and engines built once, outside the timed runs
    warm = work / "warm"
    warm.mkdir()
    shutil.copy(args.clip, warm / "warm.mp4")
    run_one("warm-up", {k: v for k, v in next(iter(configs.values())).items()
                        if k not in ("RAY", "RAY_ACTORS")}, warm, work, cache)
    for name, settings in configs.items():
        result["runs"].append(run_one(name, settings, library, work, cache))
        print(json.dumps(result["runs"][-1]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
