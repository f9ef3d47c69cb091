"""glibc's allocator, tuned for a process that analyzes videos: a few arenas, and freed
memory given back to the system after the large transient work of a lane. Nothing where
the C library is not glibc."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any


@cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def few_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and
    an analysis runs many threads (lanes, batchers, decoders): their freed memory stays
    mapped. Two arenas kept the peak of a 15 s 1080p analysis 0.3 GB lower (BENCHMARKS.md,
    memory of long videos). Before any thread starts."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-8, 2)  # M_ARENA_MAX


def trim() -> None:
    """Give the free pages of every arena back to the system (malloc_trim): after the
    speech lane, whose features and decoder states were freed into the heap."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
