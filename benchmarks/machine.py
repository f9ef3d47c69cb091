"""What every results file records about the machine it was measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from reelscope.engine.manifest import cpu_identity


def machine() -> dict[str, Any]:
    """CPU model and the instruction-set flags that matter for kernels, cores, memory,
    Python, and the GPUs (name, driver) where ``nvidia-smi`` answers."""
    out: dict[str, Any] = {**cpu_identity(), "cpu_cores": os.cpu_count(),
                           "python": platform.python_version()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        out["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True)
        out["gpus"] = [line.strip() for line in smi.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        out["gpus"] = []
    return out


def commit() -> str:
    """The repository's commit, with '+changes' when the work tree differs from it.
    ``BENCH_COMMIT`` overrides it where the work tree is a copy whose git metadata is not
    its own (the GPU machine's copy reads as the commit its checkout started from)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return f"{head}+changes" if head and git("status", "--porcelain", "--untracked-files=no") \
        else head


def describe(m: dict[str, Any]) -> str:
    """One line for a printout: 'Intel(R) Xeon(R) ..., 2 cores (avx2 avx512f ...)'."""
    gpus = f"; {', '.join(m['gpus'])}" if m.get("gpus") else ""
    return f"{m['cpu']}, {m['cpu_cores']} cores ({m['cpu_flags']}){gpus}"


def stamp() -> dict[str, Any]:
    """The keys every results file starts with: date, machine, command and commit."""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "command": " ".join(["benchmarks/" + os.path.basename(sys.argv[0]), *sys.argv[1:]]),
            "commit": commit()}
