"""CPU engines against eager PyTorch fp32, per model, precision and batch size.

    .venv/bin/python benchmarks/bench_engines.py --photos DIR --out results.json

Models: the pipeline's classifier (EfficientNet-Lite0, real weights) and
ResNet-50 (torchvision's architecture, random weights: none are available
offline; the cost is the same). Each is built through the engine compiler
(ONNX Runtime fp32 with fusion, ONNX Runtime int8 calibrated on the photos),
then every configuration is timed in its own process, one after another, with
the same number of threads, on random inputs at batch 1, 8, 32 and 128.

The int8 builds go through the default accuracy gate and record its result; for
Lite0 that means the layers measured to be the most sensitive are kept in fp32
(``reelscope/engine/backends/ort_int8.py``). ``--models lite0`` times one model only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import stamp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCHES = (1, 8, 32, 128)
PROFILE = {"lite0": "image=1x3x224x224:8x3x224x224:128x3x224x224",
           "resnet50": "input=1x3x224x224:8x3x224x224:128x3x224x224"}


def build_all(folder: Path, photos: Path, threads: int,
              models: list[str]) -> dict[str, dict[str, object]]:
    from zoo import resnet50

    from reelscope.engine import compiler
    from reelscope.engine.options import Profile
    from reelscope.engine.source import export_onnx
    from reelscope.tasks import classify

    folder.mkdir(parents=True, exist_ok=True)
    sources = {
        "lite0": lambda: classify.export_onnx(folder),
        "resnet50": lambda: export_onnx(resnet50(), folder / "resnet50.onnx", ("input",),
                                        ("logits",), (Profile.parse(PROFILE["resnet50"]),)),
    }
    norms = {"lite0": "symmetric", "resnet50": "imagenet"}
    built: dict[str, dict[str, object]] = {}
    for model in models:
        src = sources[model]()
        for precision in ("fp32", "int8"):
            opts: dict[str, object] = {
                "precision": precision, "profiles": [PROFILE[model]], "threads": threads,
                "calibration": {"source": str(photos), "normalization": norms[model]},
            }
            if model == "resnet50":
                opts["class_outputs"] = []  # random weights: logits are compared as features
            out = folder / f"{model}-{precision}.engine"
            start = time.perf_counter()
            m = compiler.build(src, out, compiler.options_from_dict(opts), cache_dir=folder,
                               progress=lambda s: print("  ", s, flush=True))
            built[f"{model}-{precision}"] = {
                "engine": str(out), "build_seconds": round(time.perf_counter() - start, 1),
                "accuracy": m.accuracy, "notes": m.options.get("engine", {}),
            }
            print(f"built {model} {precision} in {time.perf_counter() - start:.0f} s", flush=True)
        built[f"{model}-source"] = {"onnx": str(src)}
    return built


def measure(kind: str, target: str, threads: int, min_time: float) -> list[dict[str, float]]:
    """One configuration, timed in this process."""
    from reelscope.engine import bench

    if kind == "eager":
        import torch

        torch.set_num_threads(threads)
        from reelscope.engine.eager import EagerRunner
        from reelscope.engine.options import Profile
        from reelscope.engine.source import ModelSource

        factory = {"lite0": "reelscope.tasks.classify:classifier_module",
                   "resnet50": "zoo:resnet50"}[target]
        src = ModelSource("torch", factory)
        profile = Profile.parse(PROFILE[target])
        runner = EagerRunner(src.torch_module(), (profile.name,), src.output_names, (profile,))
    else:
        from reelscope.engine import compiler

        engine = compiler.load(Path(target), rebuild="never", threads=threads)
        runner, profile = engine.runner, engine.manifest.profiles[0]
    with runner:
        rows = bench.bench(runner, profile, BATCHES, min_time_s=min_time, max_iters=200)
    return [r.to_dict() for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True, help="folder of real photos")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/reelscope-bench-engines"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--models", nargs="+", choices=sorted(PROFILE), default=sorted(PROFILE))
    ap.add_argument("--one", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.threads, args.min_time)))
        return
    built = build_all(args.dir, args.photos, args.threads, args.models)
    results: dict[str, object] = {**stamp(), "threads": args.threads, "built": built, "timings": {}}
    configs = [("eager", m, f"{m} torch eager fp32") for m in args.models]
    configs += [("engine", str(built[f"{m}-{p}"]["engine"]), f"{m} onnxruntime {p}")
                for m in args.models for p in ("fp32", "int8")]
    for kind, target, label in configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--photos", str(args.photos), "--threads",
             str(args.threads), "--min-time", str(args.min_time), "--one", kind, target],
            capture_output=True, text=True, check=True)
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        results["timings"][label] = rows  # type: ignore[index]
        print(f"{label}: " + ", ".join(
            f"b{r['batch']} {r['median_ms']:.1f} ms ({r['items_per_s']:.0f}/s)" for r in rows),
            flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
