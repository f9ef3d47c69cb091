"""Which device the models run on, and the CUDA resources that go with it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from reelscope.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

DEVICE_HELP = "cpu (ONNX Runtime engines), cuda, cuda:N, or auto (a GPU when there is one)"


def check(spec: str) -> str:
    """``spec`` in lower case, or a clear error when it is not cpu, cuda, cuda:N or auto
    (a check of the words only: whether that GPU is there is :func:`resolve`'s)."""
    spec = spec.strip().lower()
    if spec in ("cpu", "auto", "cuda") or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return spec
    raise ConfigError(f"device must be {DEVICE_HELP}; got {spec!r}")


def resolve(spec: str) -> str:
    """``cpu``, ``cuda:N`` (from cuda, cuda:N or auto); a clear error when the GPU asked
    for is not there."""
    spec = check(spec)
    if spec == "cpu":
        return "cpu"
    if spec == "auto" and not _nvidia_driver():
        return "cpu"  # without importing torch (seconds) on a machine with no GPU
    try:
        import torch
    except ImportError as exc:
        if spec == "auto":
            return "cpu"
        raise ConfigError(f"device {spec!r} needs PyTorch: {exc}") from exc
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        return "cuda:0" if count else "cpu"
    index = 0 if spec == "cuda" else int(spec[5:])
    if index >= count:
        seen = f"{count} CUDA device(s) visible" if count else "no CUDA GPU is visible"
        raise ConfigError(f"device {spec!r} is not available: {seen}")
    return f"cuda:{index}"


def _nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()


def stream_context(device: str) -> Callable[[], AbstractContextManager[object]]:
    """A context that makes a new CUDA stream current (a batcher thread's own stream);
    nothing on the CPU."""
    if not device.startswith("cuda"):
        return contextlib.nullcontext

    def enter() -> AbstractContextManager[object]:
        import torch

        return torch.cuda.stream(torch.cuda.Stream(device))

    return enter


def quiet_cpu_pools() -> None:
    """One thread for BLAS, OpenMP and torch's CPU operations in a process whose models
    run on a GPU. What is left on the CPU there is small (numpy in OCR's post-processing,
    Whisper's features), and pools of one thread per core spin between those calls
    (BENCHMARKS.md, runs e to h)."""
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch.set_num_threads(1)


def set_memory_budget(device: str, fraction: float) -> None:
    """Cap this process's share of the GPU's memory; going over raises an out-of-memory
    error, which the batchers answer by splitting the batch."""
    if not device.startswith("cuda"):
        return
    if not 0 < fraction <= 1:
        raise ConfigError(f"gpu_memory_fraction must be in (0, 1], got {fraction}")
    import torch

    torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array to the device through pinned memory (an asynchronous copy); on the CPU,
    a tensor sharing the array's memory."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch))
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x
