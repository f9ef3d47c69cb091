"""Worker processes that each hold a model on the GPU, with Python's lock of their own."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from reelscope.errors import ModelError


def start_pool(processes: int, load: Callable[..., None], args: tuple[Any, ...],
               ready: Callable[[], bool], what: str) -> ProcessPoolExecutor:
    """``processes`` spawned workers, each running ``load(*args)`` first; all started
    now (``ready`` answered by each), not on the first videos."""
    pool = ProcessPoolExecutor(max_workers=processes,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=load, initargs=args)
    try:
        for future in [pool.submit(ready) for _ in range(processes)]:
            future.result()
    except Exception as exc:
        pool.shutdown(cancel_futures=True)
        raise ModelError(f"the {what} worker processes did not start: {exc}") from exc
    return pool
