"""Engines on the GPU: build in one process, load and time in another.

    python benchmarks/gpu_engines.py build --dir /tmp/engines --what resnet50:fp16,resnet50:bf16
    python benchmarks/gpu_engines.py run --dir /tmp/engines --out results.json

``build`` compiles each model:precision with the torch backend (torch.export +
AOTInductor, channels-last, CUDA graphs at run time), through the same compiler
and accuracy gate as the CLI. ``run`` is a separate process: it loads each
engine (the load time is reported; nothing is compiled again), times it at
batch 1, 8, 32 and 128 with inputs already on the GPU, and times eager PyTorch
fp32 and fp16 on the same inputs in the same run as the baselines.

ResNet-50 is torchvision's architecture with random weights (no pretrained
weights are available offline); ``build`` checks that torchvision's own
resnet50 state dict loads into it and gives the same outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import stamp

from reelscope.engine import bench, compiler
from reelscope.engine.options import BuildOptions, CalibrationOptions, Profile

BATCHES = (1, 8, 32, 128)
MODELS = {
    "resnet50": ("zoo:resnet50", "input", "imagenet"),
    "lite0": ("reelscope.tasks.classify:classifier_module", "image", "symmetric"),
}


def profile(model: str) -> Profile:
    name = MODELS[model][1]
    return Profile(name, (1, 3, 224, 224), (32, 3, 224, 224), (128, 3, 224, 224))


def check_architecture() -> None:
    """Our ResNet-50 against torchvision's: same parameter names, same outputs."""
    try:
        import torchvision
    except ImportError:
        print("torchvision absent: architecture check skipped")
        return
    from zoo import resnet50

    theirs = torchvision.models.resnet50().eval()
    ours = resnet50()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(4, 3, 224, 224)
    with torch.inference_mode():
        err = (ours(x) - theirs(x)).abs().max().item()
    n = sum(p.numel() for p in ours.parameters())
    print(f"architecture: torchvision resnet50 state dict loads strictly; {n:,} parameters; "
          f"max abs output difference {err:.2e}")


def write_photos(folder: Path) -> Path:
    """Real photos for the gate, from scikit-image's bundled data."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"):
        rgb = getattr(data, name)()[..., :3]
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def build(folder: Path, what: list[str], cuda_graphs: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    check_architecture()
    photos = write_photos(folder / "photos")
    for item in what:
        model, precision = item.split(":")
        factory, _, norm = MODELS[model]
        # Lite0 has real weights: its gate runs on real photos; ResNet-50's random-weight
        # logits carry no classes, so they are compared as features (cosine)
        gate_pictures = str(photos) if model == "lite0" else ""
        options = BuildOptions(
            backend="torch", precision=precision, device="cuda", profiles=(profile(model),),
            calibration=CalibrationOptions(holdout_source=gate_pictures, holdout=64,
                                           normalization=norm),
            class_outputs=None if model == "lite0" else (),
            cuda_graphs=cuda_graphs,
        )
        start = time.perf_counter()
        m = compiler.build(factory, folder / f"{model}-{precision}.engine", options,
                           cache_dir=folder / "cache", progress=lambda s: print("  ", s))
        print(f"built {model} {precision} in {time.perf_counter() - start:.0f} s "
              f"({m.payload_size / 1e6:.0f} MB); gate: {m.accuracy['passed']}", flush=True)


def eager_rows(model: str, dtype: torch.dtype, channels_last: bool) -> list[dict[str, float]]:
    from reelscope.engine.source import ModelSource

    net = ModelSource("torch", MODELS[model][0]).torch_module().to("cuda", dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    rows = []
    for b in BATCHES:
        x = torch.randn(b, 3, 224, 224, device="cuda", dtype=dtype).contiguous(memory_format=fmt)

        def call(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return net(x)

        times = bench.time_calls(call, 1.5, 300, warmup=5, sync=torch.cuda.synchronize)
        med = statistics.median(times)
        rows.append({"batch": b, "median_ms": med * 1e3, "items_per_s": b / med})
    return rows


def run(folder: Path, out: Path | None) -> None:
    # fresh compiler caches: whatever is not in an engine's artifacts would be compiled here
    fresh = tempfile.mkdtemp(prefix="fresh-caches-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(fresh, "inductor")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(fresh, "triton")
    results: dict[str, object] = {
        **stamp(), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "engines": {}, "eager": {},
    }
    for path in sorted(folder.glob("*.engine")):
        start = time.perf_counter()
        engine = compiler.load(path, rebuild="never", device="cuda")
        with engine:
            loaded = time.perf_counter() - start
            rows = bench.bench(engine.runner, engine.manifest.profiles[0], BATCHES,
                               min_time_s=1.5)
            # correctness on the GPU: the engine against eager fp32 on the same input
            x = np.random.default_rng(1).standard_normal((8, 3, 224, 224), dtype=np.float32)
            got = next(iter(engine.infer({engine.manifest.profiles[0].name: x}).values()))
        hits = getattr(engine.runner, "cache_hits", None)
        misses = getattr(engine.runner, "cache_misses", None)
        results["engines"][path.stem] = {  # type: ignore[index]
            "load_seconds": loaded, "inductor_cache_hits": hits, "inductor_cache_misses": misses,
            "accuracy": engine.manifest.accuracy,
            "build_seconds": engine.manifest.build_seconds,
            "rows": [r.to_dict() for r in rows], "sample_output_norm": float(np.linalg.norm(got)),
        }
        print(f"{path.stem}: loaded in {loaded:.2f} s (Inductor cache hits {hits}, misses "
              f"{misses}); " + ", ".join(
            f"b{r.batch} {r.items_per_s:,.0f}/s ({r.median_ms:.2f} ms)" for r in rows), flush=True)
    for model in MODELS:
        if not any(p.stem.startswith(model) for p in folder.glob("*.engine")):
            continue
        for label, dtype, cl, tf32 in (("fp32", torch.float32, False, False),
                                       ("fp32-tf32", torch.float32, False, True),
                                       ("fp16", torch.float16, True, True)):
            # fp32 is IEEE fp32; fp32-tf32 is PyTorch's default for convolutions (cuDNN TF32)
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            rows = eager_rows(model, dtype, cl)
            results["eager"][f"{model}-{label}"] = rows  # type: ignore[index]
            print(f"eager {model} {label}: " + ", ".join(
                f"b{r['batch']} {r['items_per_s']:,.0f}/s" for r in rows), flush=True)
    if out:
        out.write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("build", "run"))
    ap.add_argument("--dir", type=Path, default=Path("/tmp/reelscope-engines"))
    ap.add_argument("--what", default="resnet50:fp16")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-cuda-graphs", action="store_true")
    args = ap.parse_args()
    if args.mode == "build":
        build(args.dir, args.what.split(","), not args.no_cuda_graphs)
    else:
        run(args.dir, args.out)


if __name__ == "__main__":
    main()
