"""The whole analysis on a GPU: a 15 s 1080p clip from file to report, one at a time
(latency) and many in flight in one process (throughput), for one or more checkouts of
reelscope in the same run (this one, and say the previous release as the baseline).

    python benchmarks/gpu_e2e.py run --clip clip.mp4 [--src . --src .old] --out r.json

Each ``--src`` runs in a process of its own (``PYTHONPATH=SRC``): it checks what the
runtime reads and hears on the sample and the clip, loads the models (building engines
on the first run of a machine, loading them after), times ``--latency-runs`` analyses of
the clip one at a time (every time kept) and ``--clips`` distinct copies of it with
``--in-flight`` at once (a list such as 8,16,32: each in turn; GPU utilization and the
machine's CPU use sampled meanwhile; with ``--profile``, where the process's CPU goes, by
``threadprof.py``, the first in turn), with
``--naive-runs`` the naive path (each task after decoding, one after another), and, with
``--cpu-baseline``, the same code on the CPU; each ``--variant KEY=VALUE`` measures the
first checkout again with that environment variable set (a setting turned off, to see
what it costs). ``--ceiling`` first measures decoding alone with this checkout's code,
on the GPU's video engines and on every core: the ceiling the analysis's throughput is
judged against. Checkouts before the one runtime (``reelscope.pipeline.models``) are
driven through their own API.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if "reelscope" not in sys.modules and not os.environ.get("PYTHONPATH"):
    sys.path.insert(1, str(ROOT))  # this checkout, unless PYTHONPATH names one

from machine import stamp  # noqa: E402
from threadprof import ThreadProfile  # noqa: E402

from reelscope.config import Settings  # noqa: E402
from reelscope.pipeline.analyzer import Analyzer  # noqa: E402
from reelscope.report import Report  # noqa: E402
from reelscope.store.store import Store  # noqa: E402
from reelscope.video.media import Limits  # noqa: E402

SAMPLE = ROOT / "samples" / "sample.mp4"


def summary(report: Report) -> dict[str, Any]:
    return {
        "captions": [e.text for e in report.ocr],
        "transcript": report.transcript.text,
        "labels": [lb.label for lb in report.labels],
        "sentiment": report.sentiment.label,
    }


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


def open_runtime(settings: Any) -> tuple[Any, Any]:
    """(the runtime of this checkout, a function making an Analyzer with it)."""
    try:
        from reelscope.pipeline.runtime import Runtime
    except ImportError:  # a checkout before the one runtime
        from reelscope.pipeline.models import Models  # type: ignore[import-not-found]

        models = Models(settings)
        return models, lambda s, store: Analyzer(s, store, models)
    runtime = Runtime(settings)
    return runtime, lambda s, store: Analyzer(s, store, runtime)


def batcher_stats(runtime: Any) -> dict[str, Any]:
    """Each batcher's counts so far (Whisper's windows too, from its worker processes)."""
    out = {m.name: dataclasses.replace(m.batcher.stats, sizes=list(m.batcher.stats.sizes))
           for m in getattr(runtime, "_served", [])}  # copies: the batchers go on counting
    speech = getattr(runtime, "__dict__", {}).get("speech")
    if hasattr(speech, "stats"):  # Whisper's worker processes: 30 s windows per batch
        out["whisper-windows"] = speech.stats()
    return out


def graph_stats(runtime: Any) -> dict[str, tuple[int, float, float]]:
    """Each served model's CUDA graphs so far: (shapes captured, seconds waiting for the
    GPU to itself to capture, seconds capturing); checkouts before 2026-12-01 keep none."""
    out = {}
    for m in getattr(runtime, "_served", []):
        runner = getattr(m.runner, "primary", m.runner)  # the engine behind its guard
        graphs = getattr(runner, "graph_cache", None)
        if graphs is not None:
            out[m.name] = (len(graphs), round(getattr(graphs, "wait_s", 0.0), 3),
                           round(graphs.capture_s, 3))
    return out


def batcher_use(before: dict[str, Any], after: dict[str, Any], wall_s: float,
                graphs_before: dict[str, tuple[int, float, float]] | None = None,
                graphs_after: dict[str, tuple[int, float, float]] | None = None,
                ) -> dict[str, dict[str, float]]:
    """What each batcher did between two :func:`batcher_stats`: its batches, items, their
    mean and largest, and the share of ``wall_s`` spent in its model's calls; with
    :func:`graph_stats` before and after, the CUDA graphs its model captured meanwhile and
    the time that took."""
    out = {}
    for name, stats in after.items():
        was = before.get(name)
        sizes = stats.sizes[len(was.sizes):] if was else stats.sizes
        # (checkouts before 2026-12-01 do not time their batches: 0)
        busy = getattr(stats, "busy_s", 0.0) - (getattr(was, "busy_s", 0.0) if was else 0.0)
        out[name] = {"batches": len(sizes), "items": sum(sizes),
                     "mean_batch": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
                     "largest": max(sizes, default=0), "busy_s": round(busy, 2),
                     "busy_pct": round(100 * busy / wall_s, 1)}
        if graphs_after and name in graphs_after:
            shapes, wait_s, capture_s = graphs_after[name]
            had, had_wait_s, had_s = (graphs_before or {}).get(name, (0, 0.0, 0.0))
            out[name].update(graphs=shapes, graphs_captured=shapes - had,
                             capture_wait_s=round(wait_s - had_wait_s, 3),
                             capture_s=round(capture_s - had_s, 3))
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Everything for the checkout on sys.path, in this process."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="rs-gpu-e2e-"))
    settings = Settings.from_env(db=str(work / "db.sqlite"), device=args.device)
    out: dict[str, Any] = {"src": args.src_label, "device": args.device}
    start = time.perf_counter()
    runtime, make = open_runtime(settings)
    store = Store(settings.database_url)
    analyzer = make(settings, store)
    out["check"] = {name: summary(analyzer.analyze(path, force=True).report)
                    for name, path in (("sample", SAMPLE), ("clip", args.clip))}
    out["load_and_first_analyses_s"] = round(time.perf_counter() - start, 2)
    report = analyzer.analyze(args.clip, force=True).report
    out["engines"] = {k: dataclasses.asdict(v) for k, v in report.engines.items()}
    times, stages = [], []
    for _ in range(args.latency_runs):
        t = time.perf_counter()
        report = analyzer.analyze(args.clip, force=True).report
        times.append(round(time.perf_counter() - t, 3))
        stages.append(report.timings_s)
    middle = sorted(range(len(times)), key=lambda i: times[i])[len(times) // 2]
    out["latency"] = {"median_s": statistics.median(times), "times_s": times,
                      "stages_of_median_s": stages[middle]}
    if args.naive_runs:
        # the naive path: the same models, the speech lane first, then each task after
        # decoding, one after another (Analyzer(overlap=False))
        naive = Analyzer(settings, store, runtime, overlap=False)
        naive_times = []
        for _ in range(args.naive_runs):
            t = time.perf_counter()
            naive.analyze(args.clip, force=True)
            naive_times.append(round(time.perf_counter() - t, 3))
        out["naive"] = {"median_s": statistics.median(naive_times), "times_s": naive_times}
    if args.clips:
        copies = remux_copies(args.clip, args.clips, work)
        loads = [int(n) for n in str(args.in_flight).split(",")]
        out["throughput"] = throughput(args, runtime, analyzer, copies, loads[0],
                                       args.profile)
        if loads[1:]:  # the same clips with more (or fewer) in flight
            out["throughput_more"] = [throughput(args, runtime, analyzer, copies, n, False)
                                      for n in loads[1:]]
    out["graphs"] = graph_stats(runtime)
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    runtime.close()
    return out


def throughput(args: argparse.Namespace, runtime: Any, analyzer: Any, copies: list[Path],
               in_flight: int, profiled: bool) -> dict[str, Any]:
    """``copies`` analyzed ``in_flight`` at a time: clips/s, the machine's CPU and the GPU's
    use, each stage's median under this load, each batcher's use."""
    device_index = int(args.device.split(":")[1]) if ":" in args.device else 0
    profile = ThreadProfile() if profiled else contextlib.nullcontext()
    before, graphs_before = batcher_stats(runtime), graph_stats(runtime)
    with GpuSampler(device_index) as sampler, profile, ThreadPoolExecutor(in_flight) as pool:
        t = time.perf_counter()
        results = list(pool.map(lambda p: _safe(analyzer, p), copies))
        wall = time.perf_counter() - t
    loaded = [r.timings_s for r in results if isinstance(r, Report)]
    out = {
        "clips": len(copies), "in_flight": in_flight,
        "clips_per_s": round(len(copies) / wall, 3),
        "errors": [r for r in results if isinstance(r, str)], **sampler.result(),
        # each stage's median time over the clips, under this load
        "stages_median_s": {k: round(statistics.median(t.get(k, 0.0) for t in loaded), 3)
                            for k in (loaded[0] if loaded else {})},
        "batchers": batcher_use(before, batcher_stats(runtime), wall, graphs_before,
                                graph_stats(runtime))}
    if isinstance(profile, ThreadProfile):
        out["profile"] = profile.result()
    return out


def _safe(analyzer: Any, path: Path) -> Report | str:
    """The clip's report, or its error: one bad run must not hide the rest."""
    try:
        return analyzer.analyze(path, force=True).report
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _decode_one(path: Path, device: str, fps: float, limits: Limits) -> int:
    """The sampled frames of ``path`` as the analysis decodes them (on ``device``'s video
    engines where it can, else one CPU thread); how many."""
    from reelscope.video.media import probe
    from reelscope.video.nvdec import Decoding

    info = probe(path, limits)
    decoding = Decoding(info, fps, device, gpu=device != "cpu", segments=1, threads=1)
    return sum(1 for _ in decoding)


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """Decoding alone, the machine's ceiling for the analysis: ``--clips`` copies of the
    clip's sampled frames decoded by ``--ceiling-threads`` threads on the GPU's video
    engines (scaled and copied to the host, as the analysis has them), and by one process
    per core on the CPU."""
    import multiprocessing

    import torch

    work = Path(tempfile.mkdtemp(prefix="rs-ceiling-"))
    copies = remux_copies(args.clip, args.clips, work)
    settings = Settings.from_env({})  # read once, outside the timed decoding
    fps, limits = settings.sample_fps, Limits.of(settings)
    out: dict[str, Any] = {"clips": len(copies)}
    if torch.cuda.is_available():
        _decode_one(copies[0], args.device, fps, limits)  # the library's first start
        with ThreadPoolExecutor(args.ceiling_threads) as pool:
            t = time.perf_counter()
            frames = sum(pool.map(lambda p: _decode_one(p, args.device, fps, limits),
                                  copies))
            wall = time.perf_counter() - t
        out["nvdec"] = {"threads": args.ceiling_threads, "frames": frames,
                        "clips_per_s": round(len(copies) / wall, 3)}
    processes = os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.starmap(_decode_one, [(copies[0], "cpu", fps, limits)] * processes)  # started
        t = time.perf_counter()
        frames = sum(pool.starmap(_decode_one, [(p, "cpu", fps, limits) for p in copies]))
        wall = time.perf_counter() - t
    out["cpu"] = {"processes": processes, "frames": frames,
                  "clips_per_s": round(len(copies) / wall, 3)}
    return out


def run(args: argparse.Namespace) -> None:
    """One process per source and device; every result in one file."""
    result: dict[str, Any] = {**stamp(), "clip": {"path": args.clip.name,
                                                  "bytes": args.clip.stat().st_size},
                              "runs": []}
    if args.ceiling:  # this checkout's decoding, in a process of its own
        cmd = [sys.executable, __file__, "ceiling", "--clip", str(args.clip), "--device",
               args.device, "--clips", str(args.clips),
               "--ceiling-threads", str(args.ceiling_threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result["ceiling"] = (json.loads(proc.stdout.strip().splitlines()[-1])
                             if proc.returncode == 0 else {"error": proc.stderr[-2000:]})
        print(json.dumps(result["ceiling"]), flush=True)
    devices = [args.device] + (["cpu"] if args.cpu_baseline else [])
    # each --variant: the first checkout again on the first device, with a setting changed
    runs = [(src, device, "") for src in args.src for device in devices]
    runs += [(args.src[0], args.device, v) for v in args.variant]
    for src, device, variant in runs:
        label = f"{src} {variant}".strip()
        cmd = [sys.executable, __file__, "measure", "--clip", str(args.clip),
               "--device", device, "--src-label", label,
               "--latency-runs", str(args.latency_runs),
               # the CPU as a baseline to a GPU: latency only
               "--clips", str(args.clips if device == args.device else 0),
               "--in-flight", str(args.in_flight),
               "--naive-runs", str(args.naive_runs)] + (["--profile"] if args.profile else [])
        path = os.pathsep.join([str(Path(src).resolve()), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        if variant:
            key, _, value = variant.partition("=")
            env[key] = value
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            result["runs"].append({"src": label, "device": device,
                                   "error": proc.stderr[-2000:]})
        else:
            result["runs"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(result["runs"][-1], ensure_ascii=False)[:1500], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "measure", "ceiling"):
        p = sub.add_parser(name)
        p.add_argument("--clip", type=Path, required=True)
        p.add_argument("--device", default="cuda:0")
        p.add_argument("--latency-runs", type=int, default=10)
        p.add_argument("--clips", type=int, default=24)
        p.add_argument("--in-flight", default="8",
                       help="videos analyzed at once; several (8,16,32): each in turn")
        p.add_argument("--profile", action="store_true",
                       help="where the CPU goes during the throughput run (threadprof.py); "
                            "its clips/s are then not a timed figure")
        p.add_argument("--naive-runs", type=int, default=0,
                       help="time the naive path (overlap=False) this many times")
        p.add_argument("--ceiling-threads", type=int, default=14,
                       help="threads decoding on the GPU's video engines for --ceiling")
    r = sub.choices["run"]
    r.add_argument("--src", type=Path, action="append", default=None,
                   help="a checkout to measure (repeat; default: this one)")
    r.add_argument("--cpu-baseline", action="store_true")
    r.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                   help="the first --src again with this environment variable set (a "
                        "setting, say REELSCOPE_MONITOR_SHADOW_ITEMS=0); repeat")
    r.add_argument("--ceiling", action="store_true",
                   help="first, decoding alone on the GPU and the CPU (the ceiling)")
    r.add_argument("--out", type=Path, required=True)
    sub.choices["measure"].add_argument("--src-label", default=".")
    args = ap.parse_args()
    if args.cmd == "run":
        args.src = args.src or [ROOT]
        run(args)
    elif args.cmd == "ceiling":
        print(json.dumps(ceiling(args)))
    else:
        print(json.dumps(measure(args), ensure_ascii=False))


if __name__ == "__main__":
    main()
