"""The whole analysis on one GPU: a 15 s 1080p clip from file to stored report, one at a
time (latency) and many in flight (throughput), against the naive path in the same run.

Here (CPU), once: the clip and what the CPU path reads and hears in it
    .venv/bin/python scripts/make_sample.py --long .gpu-e2e/clip-1080p.mp4 --size 1080x1920 --crf 23
    .venv/bin/python benchmarks/gpu_e2e.py expect --clip .gpu-e2e/clip-1080p.mp4 \
        --out .gpu-e2e/expected.json

On the GPU machine (the packages and Whisper's weights staged there first, see
BENCHMARKS.md):
    python benchmarks/gpu_e2e.py run --clip .gpu-e2e/clip-1080p.mp4 \
        --expected .gpu-e2e/expected.json --out $OUT/gpu-e2e.json

``run`` checks first that the GPU path reads the same captions and hears the same words
as the CPU path (sample clip and 1080p clip), then times:
- optimized: fp16, dynamic batchers across videos, each model on its own CUDA stream,
  frames classified while the video still decodes, speech and pictures at once;
- the same, with one decoder and one OCR reader per video (no segments, no concurrent
  reads);
- naive: fp32, no merging across videos (max wait 0), the speech lane before the
  pictures, one decoder and one OCR reader, one clip at a time;
- optionally the CPU path (ONNX Runtime engines) on the same machine (``--cpu-baseline``).
Throughput runs distinct files (the clip remuxed with a different comment, so each is a
new video to the store), with NVML sampling GPU utilization meanwhile.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import commit, machine  # noqa: E402

from reelscope.config import Settings  # noqa: E402
from reelscope.pipeline.analyzer import Analyzer  # noqa: E402
from reelscope.pipeline.models import Models  # noqa: E402
from reelscope.report import Report  # noqa: E402
from reelscope.store.store import Store  # noqa: E402

SAMPLE = ROOT / "samples" / "sample.mp4"


def summary(report: Report) -> dict[str, Any]:
    return {
        "captions": [e.text for e in report.ocr],
        "transcript": report.transcript.text,
        "labels": [lb.label for lb in report.labels],
        "sentiment": report.sentiment.label,
    }


def expect(clip: Path, out: Path) -> None:
    """What the CPU path (the default engines, ctranslate2 Whisper) finds in both clips."""
    work = Path(tempfile.mkdtemp(prefix="rs-expect-"))
    settings = Settings.from_env(db=str(work / "db.sqlite"), device="cpu")
    analyzer = Analyzer(settings, Store(settings.database_url))
    result = {name: summary(analyzer.analyze(path, force=True).report)
              for name, path in (("sample", SAMPLE), ("clip", clip))}
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps(result, ensure_ascii=False, indent=1))


def remux_copies(clip: Path, n: int, folder: Path) -> list[Path]:
    """``n`` files with the clip's streams (packets copied) and distinct bytes."""
    import av

    paths = []
    for i in range(n):
        dst = folder / f"copy-{i:04d}.mp4"
        with av.open(str(clip)) as inp, av.open(str(dst), "w") as out:
            out.metadata["comment"] = f"reelscope benchmark copy {i}"
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams
                       if s.type in ("video", "audio")}
            for packet in inp.demux(*[s for s in inp.streams if s.index in streams]):
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        paths.append(dst)
    return paths


def cpu_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, in clock ticks (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class GpuSampler:
    """GPU utilization and memory through NVML, every ``period_s``, while running; the
    whole machine's CPU use over the same time."""

    def __init__(self, index: int, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.util: list[int] = []
        self.mem_mb: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml: Any = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # no NVML: no utilization figures
            print(f"NVML unavailable: {exc}")
            self._nvml = None

    def __enter__(self) -> GpuSampler:
        self._cpu = cpu_jiffies()
        self._wall = time.perf_counter()
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.util.append(int(rates.gpu))
            self.mem_mb.append(mem.used / 2**20)

    def __exit__(self, *exc: object) -> None:
        busy, total = cpu_jiffies()
        wall = time.perf_counter() - self._wall
        busy_share = (busy - self._cpu[0]) / max(1, total - self._cpu[1])
        self.cpu = {"cpu_busy_pct": round(100 * busy_share, 1),
                    "cpu_busy_core_s": round(busy_share * wall * (os.cpu_count() or 1), 2)}
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> dict[str, Any]:
        if not self.util:
            return dict(self.cpu)
        return {**self.cpu, "gpu_util_mean_pct": round(statistics.mean(self.util), 1),
                "gpu_util_p90_pct": sorted(self.util)[int(0.9 * (len(self.util) - 1))],
                "gpu_mem_max_mb": round(max(self.mem_mb)), "samples": len(self.util)}


def batcher_stats(models: Models) -> dict[str, dict[str, float]]:
    gpu = models.gpu
    out = {}
    batchers = [("classify", gpu.classifier.batcher)]
    if "ocr_models" in gpu.__dict__:
        batchers += [(m.name, m.batcher) for m in gpu.ocr_models]
    for name, b in batchers:
        out[name] = {"batches": b.stats.batches, "items": b.stats.items,
                     "mean_batch": round(b.stats.mean_batch, 2),
                     "max_batch": max(b.stats.sizes, default=0), "oom_splits": b.stats.oom_splits}
    return out


def reset_stats(models: Models) -> None:
    from reelscope.pipeline.batcher import BatcherStats

    gpu = models.gpu
    for b in [gpu.classifier.batcher, *(m.batcher for m in gpu.ocr_models)]:
        b.stats = BatcherStats()


def latency(analyzer: Analyzer, clip: Path, runs: int, warm: int = 2) -> dict[str, Any]:
    for _ in range(warm):
        analyzer.analyze(clip, force=True)
    reports = []
    for _ in range(runs):
        t = time.perf_counter()
        report = analyzer.analyze(clip, force=True).report
        reports.append((time.perf_counter() - t, report))
    times_s = [round(s, 4) for s, _ in reports]  # in the order run: slow outliers show
    reports.sort(key=lambda r: r[0])
    median_s, median_report = reports[len(reports) // 2]
    return {"runs": runs, "median_s": round(median_s, 4),
            "min_s": round(reports[0][0], 4), "max_s": round(reports[-1][0], 4),
            "times_s": times_s,
            "stages_s_of_median_run": {k: round(v, 4)
                                       for k, v in median_report.timings_s.items()}}


def analyze_all(analyzer: Analyzer, clips: list[Path], in_flight: int) -> list[str]:
    """Analyze every clip, ``in_flight`` at a time; the errors, counted and shown, not
    hidden."""
    errors: list[str] = []

    def one(path: Path) -> None:
        try:
            analyzer.analyze(path, force=True)
        except Exception as exc:
            errors.append(f"{path.name}: {exc}")

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(one, clips))
    return errors


def throughput(analyzer: Analyzer, clips: list[Path], in_flight: int,
               device_index: int) -> dict[str, Any]:
    with GpuSampler(device_index) as sampler:
        start = time.perf_counter()
        errors = analyze_all(analyzer, clips, in_flight)
        wall = time.perf_counter() - start
    return {"in_flight": in_flight, "clips": len(clips), "wall_s": round(wall, 3),
            "clips_per_s": round(len(clips) / wall, 2), "errors": errors[:5],
            "error_count": len(errors), **per_clip(sampler.result(), len(clips))}


def per_clip(sampled: dict[str, Any], clips: int) -> dict[str, Any]:
    """The sampler's figures, and the machine's busy CPU seconds per clip."""
    return {**sampled, "cpu_core_s_per_clip": round(sampled["cpu_busy_core_s"] / clips, 2)}


def _process_worker(settings: Settings, torch_device: str | None, paths: list[Path],
                    threads: int, ready: Any, start: Any, results: Any) -> None:
    """One analysis process of a multi-process throughput run: load, warm up, wait for
    the start, analyze its share of the clips with ``threads`` in flight."""
    models = Models(settings, torch_device)
    models.load_all()
    analyzer = Analyzer(settings, Store(settings.database_url), models)
    with ThreadPoolExecutor(max_workers=threads) as pool:  # warm each thread's reader
        list(pool.map(lambda p: analyzer.analyze(p, force=True), paths[:threads]))
    reset_stats(models)
    ready.put(os.getpid())
    start.wait()
    errors = analyze_all(analyzer, paths, threads)
    results.put({"pid": os.getpid(), "clips": len(paths), "errors": errors[:3],
                 "error_count": len(errors), "batchers": batcher_stats(models)})
    models.close()


def throughput_processes(settings: Settings, torch_device: str | None, clips: list[Path],
                         processes: int, threads: int, cpu_threads: int) -> dict[str, Any]:
    """``processes`` analysis processes on the one GPU, ``threads`` clips in flight each
    (each process batches its own videos' frames; Python's lock is per process), each
    process keeping to ``cpu_threads`` CPU threads (``--threads``; -1: no limit, each
    library's default of one per core; 0: its share of the cores)."""
    import multiprocessing

    if cpu_threads == 0:
        cpu_threads = max(1, (os.cpu_count() or 1) // processes)
    settings = replace(settings, threads=max(0, cpu_threads))

    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_process_worker,
                         args=(settings, torch_device, clips[i::processes], threads, ready,
                               start, results)) for i in range(processes)]
    t = time.perf_counter()
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=400)
    startup = time.perf_counter() - t
    with GpuSampler(0) as sampler:
        t = time.perf_counter()
        start.set()
        done = [results.get(timeout=500) for _ in procs]
        wall = time.perf_counter() - t
    for proc in procs:
        proc.join(timeout=60)
    total = sum(d["clips"] for d in done)
    return {"processes": processes, "threads_per_process": threads,
            "cpu_threads_per_process": cpu_threads, "clips": total,
            "startup_s": round(startup, 1), "wall_s": round(wall, 3),
            "clips_per_s": round(total / wall, 2),
            "error_count": sum(d["error_count"] for d in done),
            "errors": [e for d in done for e in d["errors"]][:5],
            "batchers_of_first_process": done[0]["batchers"],
            **per_clip(sampler.result(), total)}


def check(name: str, got: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    verdict = {
        "captions_equal": got["captions"] == want["captions"],
        "transcript_equal": got["transcript"] == want["transcript"],
        "labels_equal": got["labels"] == want["labels"],
        "sentiment_equal": got["sentiment"] == want["sentiment"],
        "got": got,
    }
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in verdict.items() if k != "got"))
    return verdict


def run(args: argparse.Namespace) -> None:
    import torch

    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""},
        "commit": commit(),
        "clip": {"path": args.clip.name, "bytes": args.clip.stat().st_size},
        "command": " ".join(sys.argv),
    }
    work = Path(tempfile.mkdtemp(prefix="rs-gpu-e2e-"))
    expected = json.loads(args.expected.read_text()) if args.expected else None
    base = Settings.from_env(db=str(work / "db.sqlite"),
                             device="cpu" if args.dry_run else args.device,
                             gpu_max_batch=args.max_batch, gpu_max_wait_ms=args.max_wait_ms)

    def dump() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1))

    torch_device = "cpu" if args.dry_run else None  # the GPU code path on the CPU

    # optimized ------------------------------------------------------------------------
    models = Models(base, torch_device)
    t = time.perf_counter()
    models.load_all()
    out["load_s"] = round(time.perf_counter() - t, 2)
    analyzer = Analyzer(base, Store(base.database_url), models)
    out["engines"] = {k: str(v) for k, v in
                      analyzer.analyze(SAMPLE, force=True).report.engines.items()}
    if expected:
        out["correctness"] = {
            name: check(name, summary(analyzer.analyze(path, force=True).report), expected[name])
            for name, path in (("sample", SAMPLE), ("clip", args.clip))}
    dump()
    out["optimized_latency"] = latency(analyzer, args.clip, args.latency_runs)
    print("optimized latency", out["optimized_latency"])
    dump()
    # the same models, one decoder and one OCR reader per video (before segments and
    # concurrent reads)
    single = replace(base, decode_segments=1, gpu_ocr_readers=1)
    out["optimized_latency_one_decoder_one_reader"] = latency(
        Analyzer(single, Store(base.database_url), models), args.clip, args.latency_runs)
    print("one decoder, one reader", out["optimized_latency_one_decoder_one_reader"])
    dump()
    copies = remux_copies(args.clip, args.clips, work)
    out["throughput"] = []
    for k in args.in_flight:
        k = min(k, len(copies))
        throughput(analyzer, copies[:k], k, 0)  # warm-up: each thread's OCR reader
        reset_stats(models)
        result = throughput(analyzer, copies, k, 0)
        result["batchers"] = batcher_stats(models)
        print("throughput", result)
        out["throughput"].append(result)
        dump()
    models.close()
    del analyzer, models
    torch.cuda.empty_cache()
    if args.ocr_processes:
        # OCR in worker processes, each with the models and Python's lock of its own
        spread = replace(base, gpu_ocr_processes=args.ocr_processes)
        spread_models = Models(spread, torch_device)
        spread_models.load_all()
        spread_analyzer = Analyzer(spread, Store(base.database_url), spread_models)
        if expected:
            out["correctness_ocr_processes"] = check(
                "clip, OCR in processes",
                summary(spread_analyzer.analyze(args.clip, force=True).report),
                expected["clip"])
        out["optimized_latency_ocr_processes"] = {
            "ocr_processes": args.ocr_processes,
            **latency(spread_analyzer, args.clip, args.latency_runs)}
        print("OCR in processes", out["optimized_latency_ocr_processes"])
        dump()
        spread_models.close()
        del spread_analyzer, spread_models
        torch.cuda.empty_cache()
    out["throughput_processes"] = []
    for procs, cpu_threads in itertools.product(args.processes, args.process_cpu_threads):
        result = throughput_processes(base, torch_device, copies, procs,
                                      args.threads_per_process, cpu_threads)
        print("throughput, processes", result)
        out["throughput_processes"].append(result)
        dump()

    # naive ----------------------------------------------------------------------------
    naive_settings = replace(base, gpu_precision="fp32", gpu_max_wait_ms=0.0,
                             gpu_speech_processes=0, decode_segments=1, gpu_ocr_readers=1,
                             db=str(work / "naive.sqlite"))
    naive_models = Models(naive_settings, torch_device)
    naive_models.load_all()
    naive = Analyzer(naive_settings, Store(naive_settings.database_url), naive_models,
                     overlap=False)
    out["naive_latency"] = latency(naive, args.clip, args.naive_runs)
    print("naive latency", out["naive_latency"])
    dump()
    result = throughput(naive, copies[: args.naive_clips], 1, 0)
    print("naive throughput", result)
    out["naive_throughput"] = result
    naive_models.close()
    dump()

    # the CPU path on the same machine ---------------------------------------------------
    if args.cpu_baseline:
        cpu_settings = replace(base, device="cpu", db=str(work / "cpu.sqlite"))
        cpu = Analyzer(cpu_settings, Store(cpu_settings.database_url))
        out["cpu_latency"] = latency(cpu, args.clip, 2, warm=1)
        print("cpu latency", out["cpu_latency"])
    runs = [*out["throughput"], *out["throughput_processes"]]
    out["ratios"] = {"latency_naive_over_optimized": round(
        out["naive_latency"]["median_s"] / out["optimized_latency"]["median_s"], 2)}
    if runs:
        best = max(runs, key=lambda r: r["clips_per_s"])
        out["ratios"]["throughput_optimized_over_naive"] = round(
            best["clips_per_s"] / out["naive_throughput"]["clips_per_s"], 2)
    print("ratios", out["ratios"])
    dump()
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("expect", help="what the CPU path finds (here)")
    e.add_argument("--clip", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="check and time the GPU path (on the GPU machine)")
    r.add_argument("--clip", type=Path, required=True)
    r.add_argument("--expected", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--latency-runs", type=int, default=10)
    r.add_argument("--ocr-processes", type=int, default=0,
                   help="also measure the latency with OCR in this many worker processes")
    r.add_argument("--clips", type=int, default=64, help="distinct clips per throughput run")
    r.add_argument("--in-flight", type=int, nargs="*", default=[8],
                   help="clips in flight in this one process")
    r.add_argument("--processes", type=int, nargs="*", default=[4, 8],
                   help="analysis processes of the multi-process throughput runs")
    r.add_argument("--threads-per-process", type=int, default=4)
    r.add_argument("--process-cpu-threads", type=int, nargs="+", default=[0],
                   help="CPU threads of each process (--threads): 0 = cores / processes, "
                        "-1 = no limit; one run per value")
    r.add_argument("--naive-runs", type=int, default=5)
    r.add_argument("--naive-clips", type=int, default=8)
    r.add_argument("--max-batch", type=int, default=64)
    r.add_argument("--max-wait-ms", type=float, default=5.0)
    r.add_argument("--cpu-baseline", action="store_true")
    r.add_argument("--dry-run", action="store_true",
                   help="run the GPU code path on the CPU (to try this script here)")
    args = parser.parse_args()
    if args.cmd == "expect":
        expect(args.clip, args.out)
    else:
        run(args)


if __name__ == "__main__":
    main()
