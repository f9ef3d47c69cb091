"""How often the monitor raises a false alarm on normal traffic, and how fast it catches a
damaged engine; the numbers behind docs/monitoring.md.

    .venv/bin/python benchmarks/monitor_false_alarms.py [--videos 200] [--out DIR]

1. Builds the real classifier (EfficientNet-Lite0) as an fp32 ONNX Runtime engine with a
   drift reference recorded on 12 representative clips (scripts/traffic.py), and a copy
   with damaged weights (noise at 0.02 and 0.05 of each tensor's std).
2. Records every frame's top-1 confidence of --videos normal clips (other seeds) through
   the good engine and through each damaged one (one process, models loaded once).
3. Replays the drift policy offline on those streams for several windows and thresholds:
   alarms on normal traffic, and videos until the damaged engines are caught.
4. Runs the real monitored pipeline with the default settings over the normal clips and
   counts fallbacks (must be 0) and over the damaged engine (videos until bypassed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import traffic  # noqa: E402
from faults import perturb_engine  # noqa: E402
from machine import stamp  # noqa: E402

from reelscope.config import Settings  # noqa: E402
from reelscope.engine import compiler  # noqa: E402
from reelscope.engine.options import BuildOptions, CalibrationOptions, Profile  # noqa: E402
from reelscope.monitor import drift  # noqa: E402
from reelscope.pipeline.analyzer import Analyzer  # noqa: E402
from reelscope.pipeline.runtime import Runtime  # noqa: E402
from reelscope.store.store import Store  # noqa: E402
from reelscope.tasks import classify  # noqa: E402


def pipeline_runs(engine: Path, clips: list[Path], work: Path, cache: Path,
                  **settings: object) -> list[dict[str, object]]:
    """The monitored pipeline (default settings) over the clips in one process: per clip,
    which path served the classifier and whether its fallback was active."""
    s = Settings.from_env({}, db=str(work / f"{engine.stem}-{time.time_ns()}.db"),
                          cache_dir=str(cache), classifier_engine=str(engine), **settings)
    store = Store(s.database_url)
    analyzer = Analyzer(s, store, Runtime(s))
    entries = []
    for clip in clips:
        entry = analyzer.analyze(clip, force=True).report.engines["classify"]
        entries.append({"path": entry.path, "fallback_active": entry.fallback_active})
    store.close()
    return entries


def stream(engine: Path, clips: list[Path], cache: Path) -> list[np.ndarray]:
    """Top-1 confidences per clip as the engine serves them (frames as the pipeline samples)."""
    from reelscope.pipeline.batcher import BatcherOptions
    from reelscope.pipeline.serving import ServedModel
    from reelscope.report import EngineUse
    from reelscope.video.decode import sample_frames
    from reelscope.video.media import Limits, probe

    eng = compiler.load(engine, cache_dir=cache)
    out = []
    eng.__enter__()
    served = ServedModel("classifier", eng.runner, "image", ("logits", "features"),
                         EngineUse(eng.manifest.backend, eng.manifest.precision),
                         BatcherOptions(32, 0.0))
    try:
        classifier = classify.Classifier(served)
        for clip in clips:
            frames = list(sample_frames(probe(clip, Limits(600, 8192, 4096)), 2.0))
            out.append(drift.top1_confidence(classifier.run(frames).probs))
    finally:
        served.close()  # closes the engine's runner too
    return out


def replay(reference: np.ndarray, clips: list[np.ndarray], window: int, psi_max: float,
           ks_max: float) -> tuple[int, int | None]:
    """Alarms over the stream (the window restarts after each), and the video of the first."""
    buf: list[float] = []
    alarms, first = 0, None
    for i, conf in enumerate(clips):
        buf.extend(conf.tolist())
        buf = buf[-window:]
        if len(buf) == window:
            w = np.array(buf)
            if drift.psi(reference, w) > psi_max or drift.ks(reference, w) > ks_max:
                alarms += 1
                first = i + 1 if first is None else first
                buf = []
    return alarms, first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = work / "cache"
        pictures = traffic.load_photos(work / "photos")
        print("clips...", flush=True)
        traffic.write_clips(work / "reference", range(0, 12), pictures)
        clips = traffic.write_clips(work / "traffic", range(1000, 1000 + args.videos), pictures)
        good = work / "good.engine"
        print("engine...", flush=True)
        compiler.build(
            classify.export_onnx(cache), good,
            BuildOptions(precision="fp32", profiles=(Profile.parse(
                "image=1x3x224x224:8x3x224x224:32x3x224x224"),),
                calibration=CalibrationOptions(normalization="symmetric",
                                               reference_source=str(work / "reference"))),
            cache_dir=cache)
        manifest = compiler.load(good, cache_dir=cache).manifest
        reference = np.asarray(manifest.monitor["values"])
        damaged = {s: perturb_engine(good, work / f"damaged-{s}.engine", s) for s in (0.02, 0.05)}
        print("streams...", flush=True)
        normal = stream(good, clips, cache)
        bad = {s: stream(p, clips[:40], cache) for s, p in damaged.items()}
        grid = []
        for window in (96, 192, 288, 384):
            for psi_max, ks_max in ((0.5, 0.3), (1.0, 0.4), (1.5, 0.5)):
                alarms, _ = replay(reference, normal, window, psi_max, ks_max)
                caught = {str(s): replay(reference, b, window, psi_max, ks_max)[1]
                          for s, b in bad.items()}
                grid.append({"window": window, "psi_max": psi_max, "ks_max": ks_max,
                             "false_alarms": alarms, "caught_after_videos": caught})
                print(grid[-1], flush=True)
        print("pipeline with the defaults...", flush=True)
        defaults = Settings()
        normal_runs = pipeline_runs(good, clips, work, cache)
        fallbacks = sum(1 for r in normal_runs if r["path"] != "engine")
        caught: dict[str, int | None] = {}
        for label, engine, extra in (
            ("damaged 0.05, defaults", damaged[0.05], {}),
            ("damaged 0.02, defaults", damaged[0.02], {}),
            ("damaged 0.05, drift only", damaged[0.05], {"monitor_shadow_items": 0}),
            ("damaged 0.02, drift only", damaged[0.02], {"monitor_shadow_items": 0}),
        ):
            runs = pipeline_runs(engine, clips[:30], work, cache, **extra)
            caught[label] = next(
                (i + 1 for i, r in enumerate(runs) if r["fallback_active"]), None)
            print(label, caught[label], flush=True)
        frames = [len(c) for c in normal]
    result = {
        **stamp(),
        "videos": args.videos,
        "frames_per_video": {"min": min(frames), "max": max(frames)},
        "reference_values": len(reference),
        "defaults": {"window": defaults.monitor_window, "psi_max": defaults.monitor_psi_max,
                     "ks_max": defaults.monitor_ks_max,
                     "shadow_items": defaults.monitor_shadow_items,
                     "shadow_agreement": defaults.monitor_shadow_agreement},
        "pipeline_normal_videos": len(normal_runs),
        "pipeline_normal_fallbacks": fallbacks,
        "pipeline_caught_after_videos": caught,
        "replay": grid,
        "seconds": round(time.time() - started, 1),
    }
    path = args.out / f"results-monitor-{datetime.now(UTC):%Y-%m-%d}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "replay"}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
