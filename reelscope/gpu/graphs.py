"""A module's forward replayed as CUDA graphs, one per input shape.

The OCR models converted from ONNX run hundreds of small modules per call, each one
Python work and a kernel launch: measured on the H100 machine, about 20 ms of CPU per
detector or recognizer call, more than the GPU work itself. A CUDA graph records the
launches of one call once and replays them with a single launch.

A graph is captured for an input shape the second time it is seen (one-off shapes run
eagerly) and at most ``max_graphs`` shapes are kept; shapes past that run eagerly too.
The graphs of one module share one memory pool: they are replayed one at a time, from
one thread (the model's batcher), and each output is copied out before the next replay.
A shape whose capture fails (an operation that cannot be captured, say) runs eagerly
from then on, and the failure is logged once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("reelscope.gpu")


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    input: torch.Tensor
    output: torch.Tensor


class GraphedModule:
    """Calls ``net`` on device tensors, through a CUDA graph per input shape where it can.
    Not thread-safe: one caller (a batcher's thread) at a time."""

    def __init__(self, net: torch.nn.Module, max_graphs: int = 48, after: int = 2) -> None:
        self.net = net
        self.max_graphs = max_graphs
        self.after = after
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        self._seen: Counter[tuple[int, ...]] = Counter()
        self._failed: set[tuple[int, ...]] = set()
        self._pool: Any = None
        self.replays = 0

    def stats(self) -> dict[str, int]:
        """Graphs captured, shapes whose capture failed, replays so far."""
        return {"graphs": len(self._graphs), "failed": len(self._failed),
                "replays": self.replays}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        graph = self._graphs.get(key)
        if graph is None:
            self._seen[key] += 1
            if (self._seen[key] < self.after or key in self._failed
                    or len(self._graphs) >= self.max_graphs):
                out: torch.Tensor = self.net(x)
                return out
            graph = self._capture(x)
            if graph is None:
                out = self.net(x)
                return out
        graph.input.copy_(x)
        graph.graph.replay()
        self.replays += 1
        return graph.output

    def _capture(self, x: torch.Tensor) -> _Graph | None:
        key = tuple(x.shape)
        try:
            static = x.clone()
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                self.net(static)  # warm-up: lazy initialization happens outside capture
            torch.cuda.current_stream(x.device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                output = self.net(static)
        except Exception as exc:  # any capture failure: run eagerly
            self._failed.add(key)
            if len(self._failed) == 1:
                log.warning("CUDA graph capture failed for input %s, running eagerly: %s",
                            key, exc)
            return None
        captured = _Graph(graph, static, output)
        self._graphs[key] = captured
        return captured
