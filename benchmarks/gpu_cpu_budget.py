"""Where a clip's CPU time goes on the GPU path: each part of the analysis alone.

    python benchmarks/gpu_cpu_budget.py --clip .gpu-e2e/clip-1080p.mp4 [--out budget.json]

The throughput run (gpu_e2e.py) is bounded by the CPU: this measures the CPU seconds
(this process and its Whisper workers) that each part costs for one clip, one part at a
time, median of ``--runs`` after a warm-up, and the CPU burned while nothing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from machine import stamp  # noqa: E402

from reelscope.config import Settings  # noqa: E402
from reelscope.pipeline.analyzer import Analyzer  # noqa: E402
from reelscope.pipeline.runtime import Runtime  # noqa: E402
from reelscope.store.store import Store  # noqa: E402
from reelscope.tasks.fingerprint import audio_fingerprint, frame_hashes  # noqa: E402
from reelscope.tasks.ocr import _plan  # noqa: E402
from reelscope.video.decode import decode_audio, sample_frames  # noqa: E402
from reelscope.video.media import Limits, probe  # noqa: E402


def cpu_s() -> float:
    """CPU seconds so far of this process and its children (the Whisper workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


def measure(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    fn()
    cpus, walls = [], []
    for _ in range(runs):
        c, w = cpu_s(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(cpu_s() - c)
    return {"cpu_s": round(statistics.median(cpus), 3),
            "wall_s": round(statistics.median(walls), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rs-budget-"))
    settings = Settings.from_env(db=str(work / "db.sqlite"), device=args.device)
    models = Runtime(settings)
    models.load_all()
    analyzer = Analyzer(settings, Store(settings.database_url), models)
    info = probe(args.clip, Limits.of(settings))
    fps = settings.sample_fps
    frames = list(sample_frames(info, fps))
    to_read = [f for f, needed in _plan(frames, settings.ocr_change_threshold,
                                        settings.ocr_refresh_s) if needed]
    audio = decode_audio(info)

    def ocr() -> None:
        with models.ocr_reader() as reader:
            for frame in to_read:
                reader.read(frame.rgb)

    parts: dict[str, Callable[[], Any]] = {
        "nothing running, 1 s": lambda: time.sleep(1.0),
        "decode, every frame, 1 thread": lambda: list(
            sample_frames(info, fps, skip=False, threads=1)),
        "decode, unneeded frames skipped, 1 thread": lambda: list(
            sample_frames(info, fps, threads=1)),
        "OCR change check": lambda: list(_plan(frames, settings.ocr_change_threshold,
                                               settings.ocr_refresh_s)),
        f"OCR of the {len(to_read)} frames read": ocr,
        f"classifier, {len(frames)} frames": lambda: models.classifier.run(frames),
        f"PDQ, {len(frames)} frames": lambda: frame_hashes(frames),
        "audio decode": lambda: decode_audio(info),
        "Chromaprint": lambda: audio_fingerprint(audio),
        "Whisper (its worker process included)": lambda: models.speech.transcribe(audio),
        "text encoder": lambda: models.text_encoder.encode("This is my cat 这是我的猫"),
        "whole analysis, alone": lambda: analyzer.analyze(args.clip, force=True),
    }
    out: dict[str, Any] = {**stamp(), "clip": args.clip.name, "parts": {}}
    for name, fn in parts.items():
        out["parts"][name] = measure(fn, args.runs)
        print(name, out["parts"][name], flush=True)
    models.close()
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
