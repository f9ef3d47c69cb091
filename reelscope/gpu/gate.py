"""One gate for the GPU work of this process: model calls and video decoding pass it
together (shared), a CUDA graph capture passes it alone (exclusive).

A capture records the kernels launched on one stream, and CUDA, PyTorch's memory
allocator and the video decoder do not keep a capture apart from what other threads do
meanwhile: measured on an H200, a device-wide synchronize in one thread spoiled another
thread's capture ("operation not permitted when stream is capturing"), and a model
warming up in one thread while another ended its capture crashed the process
(segmentation fault in ``capture_end``). So a capture waits until no other thread works
on the GPU, and new work waits until the capture is done. Captures are rare (one per
new input shape of a model, at most a model's ``max_graphs``), so the others wait only
while a model meets its first inputs of each shape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class GpuGate:
    """Shared holds for work, an exclusive hold for captures. Both are reentrant in a
    thread; a thread holding a shared hold may ask for the exclusive one (its shared holds
    are set aside while it waits, so two threads doing so do not wait for each other)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._working = 0  # threads holding shared holds
        self._owner: int | None = None  # the thread holding the exclusive hold
        self._pending = 0  # threads waiting for the exclusive hold: new work waits too
        self._local = threading.local()

    def _depth(self) -> int:
        return int(getattr(self._local, "depth", 0))

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Work on the GPU (a model call, a batch of decoded frames)."""
        me = threading.get_ident()
        if self._depth() or self._owner == me:  # already inside
            self._local.depth = self._depth() + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._cond:
            while self._owner is not None or self._pending:
                self._cond.wait()
            self._working += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._working -= 1
                if not self._working:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No other thread works on the GPU inside (a CUDA graph capture)."""
        me = threading.get_ident()
        if self._owner == me:
            yield
            return
        mine = 1 if self._depth() else 0  # this thread's shared hold, set aside
        with self._cond:
            self._working -= mine
            if mine and not self._working:
                self._cond.notify_all()
            self._pending += 1
            try:
                while self._owner is not None or self._working:
                    self._cond.wait()
            finally:
                self._pending -= 1
            self._owner = me
        try:
            yield
        finally:
            with self._cond:
                self._owner = None
                self._working += mine
                self._cond.notify_all()


GATE = GpuGate()


@contextmanager
def capturing(graph: Any, pool: Any = None) -> Iterator[None]:
    """Capture the CUDA work done inside into ``graph``, alone on the GPU (:data:`GATE`).
    Thread-local mode: what other threads could still do (a host-side call) does not
    spoil it."""
    import torch

    with GATE.exclusive(), torch.cuda.graph(graph, pool=pool,
                                            capture_error_mode="thread_local"):
        yield
