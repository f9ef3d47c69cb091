"""A model's CUDA graphs: one captured per input shape, its batch padded to a power of two.

A model of hundreds of small operations replayed from a graph costs one launch instead of
hundreds of Python calls. A call's batch is padded to the next power of two (zero rows; a
model's rows are independent at inference) so that few shapes are captured: a batcher
that merges the videos in flight makes batches of every size from 1 to its cap, and each
new shape's capture has the GPU to itself (:mod:`reelscope.gpu.gate`), stalling every
other model call and decoder of the process meanwhile. Past ``max_graphs`` shapes, or
once a capture fails (a module that reads a value back to the host cannot be captured),
calls run eagerly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from reelscope.gpu.gate import GATE, capturing

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

Shape = tuple[tuple[int, ...], ...]


def padded_batch(n: int, top: int) -> int:
    """``n`` up to the next power of two, within ``top`` (the largest batch accepted)."""
    return n if n >= top else min(1 << (n - 1).bit_length(), top)


class CudaGraphs:
    """The graphs of ``fn`` (tensors in, a tensor or a sequence of tensors out)."""

    def __init__(self, fn: Callable[..., Any], top: int, max_graphs: int = 64,
                 name: str = "") -> None:
        self.fn = fn
        self.top = top
        self.max_graphs = max_graphs
        self.name = name
        self.enabled = True
        self.wait_s = 0.0  # spent waiting for the GPU to itself, to capture
        self.capture_s = 0.0  # spent capturing (the module's two warm-up calls included)
        self._graphs: dict[Shape, tuple[Any, list[Any], list[Any]]] = {}
        self._pool: Any = None
        self._lock = threading.Lock()  # one replay at a time: the graphs share their memory

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        with GATE.exclusive():
            self._graphs.clear()
            self._pool = None

    def run(self, args: Sequence[torch.Tensor],
            take: Callable[[torch.Tensor], T]) -> list[T] | None:
        """``take`` of each output's first ``len(args[0])`` rows, from the graph of the
        call's padded shape (captured now if new), applied before the next replay can
        overwrite them; None where the call is to run eagerly instead."""
        n = int(args[0].shape[0])
        padded = padded_batch(n, self.top)
        key = _key(args, padded)
        entry = self._graphs.get(key)
        if entry is None:
            if not self.enabled or len(self._graphs) >= self.max_graphs:
                return None
            # alone on the GPU (no replay of these graphs either), and outside the replay
            # lock: a thread that waits for it may hold a shared hold of the gate
            start = time.perf_counter()
            with GATE.exclusive():
                self.wait_s += time.perf_counter() - start
                entry = self._graphs.get(key) or self._new(key, args, padded)
            if entry is None:
                return None
        with self._lock:
            graph, static_in, static_out = entry
            for dst, src in zip(static_in, args, strict=True):
                dst[:n].copy_(src)
                if padded > n:
                    dst[n:].zero_()
            graph.replay()
            return [take(o[:n]) for o in static_out]

    def prepare(self, inputs: Callable[[int], Sequence[torch.Tensor]]) -> None:
        """Capture now every batch a call can be padded to (1, 2, 4, ... up to the
        largest), ``inputs(n)`` giving a call's inputs of batch n: for a model whose inputs
        differ only in their batch, so that no capture waits for the GPU under traffic."""
        start = time.perf_counter()
        with GATE.exclusive():
            self.wait_s += time.perf_counter() - start
            for n in batch_sizes(self.top):
                args = inputs(n)
                key = _key(args, n)
                if key not in self._graphs and self._new(key, args, n) is None:
                    return

    def _new(self, key: Shape, args: Sequence[torch.Tensor],
             padded: int) -> tuple[Any, list[Any], list[Any]] | None:
        if not self.enabled or len(self._graphs) >= self.max_graphs:
            return None
        start = time.perf_counter()
        try:
            return self._capture(key, args, padded)
        finally:
            self.capture_s += time.perf_counter() - start

    def _capture(self, key: Shape, args: Sequence[torch.Tensor],
                 padded: int) -> tuple[Any, list[Any], list[Any]] | None:
        import torch

        static_in = [_pad(x, padded) for x in args]
        # two calls outside a graph, on a side stream (workspaces allocated); an error
        # here is the call's, as it would be eagerly
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with capturing(graph, self._pool):
                static_out = as_list(self.fn(*static_in))
        except Exception as exc:  # what capture raises varies by module
            log.warning("%s not captured as a CUDA graph (%s: %s); its calls run eagerly",
                        self.name or "a model", type(exc).__name__, exc)
            self.enabled = False
            self._graphs.clear()
            return None
        entry = (graph, static_in, static_out)
        self._graphs[key] = entry
        return entry


class WithGraphs:
    """A runner whose calls may replay the CUDA graphs of its ``graph_cache``."""

    graph_cache: CudaGraphs

    @property
    def cuda_graphs(self) -> bool:
        """Whether calls replay CUDA graphs (false once a capture failed)."""
        return self.graph_cache.enabled

    @property
    def graphs(self) -> int:
        """Input shapes captured so far."""
        return len(self.graph_cache)


def batch_sizes(top: int) -> list[int]:
    """Every batch :func:`padded_batch` gives: 1, 2, 4, ... up to ``top`` (``top`` itself
    last where it is no power of two); none where no largest batch is known (0)."""
    out, n = [], 1
    while n < top:
        out.append(n)
        n *= 2
    return [*out, top] if top >= 1 else []


def _key(args: Sequence[torch.Tensor], batch: int) -> Shape:
    """A graph's key: its inputs' shapes with the batch they are padded to."""
    return tuple((batch, *x.shape[1:]) for x in args)


def as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, list | tuple) else [out]


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` with zero rows added to a batch of ``n``, in its layout (channels-last
    stays so): a copy, the graph's own input."""
    import torch

    if x.shape[0] == n:
        return x.clone()
    layout = (torch.channels_last if x.dim() == 4
              and x.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    out = torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device,
                      memory_format=layout)
    out[x.shape[0]:].zero_()
    out[: x.shape[0]].copy_(x)
    return out
