"""Latency and throughput of a loaded engine per batch size."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reelscope.engine.base import Runner
from reelscope.engine.options import Profile
from reelscope.errors import ShapeError


@dataclass(frozen=True)
class BenchRow:
    batch: int
    median_ms: float
    p90_ms: float
    items_per_s: float
    iterations: int
    mode: str  # host: numpy in and out; device: tensors stay on the GPU

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_for(profile: Profile, batch: int) -> tuple[int, ...]:
    shape = (batch, *profile.opt[1:])
    profile.check(shape)
    return shape


def time_calls(call: Callable[[], object], min_time_s: float, max_iters: int,
               warmup: int = 3, sync: Callable[[], None] = lambda: None) -> list[float]:
    for _ in range(warmup):
        call()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + min_time_s
    while len(times) < max_iters and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return times


def bench(runner: Runner, profile: Profile, batches: Sequence[int], *, min_time_s: float = 2.0,
          max_iters: int = 500, seed: int = 0) -> list[BenchRow]:
    """Times ``runner`` (already active) on random inputs of each batch size."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        try:
            shape = shape_for(profile, batch)
        except ShapeError as exc:
            raise ShapeError(f"batch {batch}: {exc}") from None
        x = rng.standard_normal(shape, dtype=np.float32)
        device_call = _device_call(runner, profile.name, x)
        if device_call is not None:
            call, sync, mode = device_call[0], device_call[1], "device"
        else:
            def call(x: np.ndarray = x) -> object:
                return runner.infer({profile.name: x})
            sync, mode = (lambda: None), "host"
        times = time_calls(call, min_time_s, max_iters, sync=sync)
        med = statistics.median(times)
        rows.append(BenchRow(batch, med * 1e3, float(np.percentile(times, 90)) * 1e3,
                             batch / med, len(times), mode))
    return rows


def _device_call(runner: Runner, name: str, x: np.ndarray
                 ) -> tuple[Callable[[], object], Callable[[], None]] | None:
    """For a GPU runner: inputs placed on the device once, outputs left there."""
    run_tensors = getattr(runner, "run_tensors", None)
    device = str(getattr(runner, "device", "cpu"))
    if run_tensors is None or not device.startswith("cuda"):
        return None
    import torch

    runner.check_feed({name: x})
    tensor = runner.to_device(x)  # type: ignore[attr-defined]
    return (lambda: run_tensors([tensor])), torch.cuda.synchronize
