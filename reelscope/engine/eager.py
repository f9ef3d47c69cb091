"""Eager PyTorch: the fp32 reference the gate and the benchmarks compare against, and the
runner of a model the torch backend cannot compile (on a GPU, in reduced precision).

On a GPU such a module can run as CUDA graphs (``cuda_graphs``): the first call of each
input shape is captured and later calls of that shape replay it, so a module of hundreds
of small operations costs one launch instead of hundreds of Python calls. A call's batch
is padded to a power of two (zeros; the rows are independent) so that few shapes are
captured; past ``max_graphs`` shapes, or when a capture fails (a module that reads a
value back to the host cannot be captured), calls run eagerly. A capture has the GPU to
itself (:mod:`reelscope.gpu.gate`): the process's other model calls and decoders wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from reelscope.engine.base import Runner, TensorSpec, specs_from_profiles
from reelscope.engine.options import Profile
from reelscope.gpu.gate import GATE, capturing

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class EagerRunner(Runner):
    NAME = "torch-eager"

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str],
                 output_names: Sequence[str], profiles: tuple[Profile, ...] = (),
                 device: str = "cpu", precision: str = "fp32", cuda_graphs: bool = False,
                 max_graphs: int = 64) -> None:
        super().__init__(profiles)
        self.module = module
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.device = device
        self._precision = precision
        self.cuda_graphs = cuda_graphs and device.startswith("cuda")
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[tuple[int, ...], ...], tuple[Any, list[Any], list[Any]]] = {}
        self._pool: Any = None
        self._lock = threading.Lock()

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return specs_from_profiles(self.profiles)

    def activate(self) -> None:
        import torch

        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self._precision,
                                                                         torch.float32)
        self.module = self.module.to(device=self.device, dtype=self.dtype).eval()

    def deactivate(self) -> None:
        with GATE.exclusive():
            self._graphs.clear()
            self._pool = None

    @property
    def graphs(self) -> int:
        """Input shapes captured so far."""
        return len(self._graphs)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode(), GATE.shared():
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device,
                                                                        self.dtype)
                    for n in self.input_names]
            if self.cuda_graphs:
                replayed = self._replay(args)
                if replayed is not None:
                    return replayed
            outs = _as_list(self.module(*args))
            return {n: o.float().cpu().numpy()
                    for n, o in zip(self.output_names, outs, strict=True)}

    def _replay(self, args: list[torch.Tensor]) -> dict[str, np.ndarray] | None:
        """The call's outputs from its shape's graph (captured now if new); None where the
        call runs eagerly instead."""
        n = int(args[0].shape[0])
        padded = self._padded(n)
        key = tuple((padded, *x.shape[1:]) for x in args)
        entry = self._graphs.get(key)
        if entry is None:
            # alone on the GPU (no replay of this runner's graphs either), and outside the
            # runner's lock: a thread that waits for it may hold a shared hold of the gate
            with GATE.exclusive():
                entry = self._graphs.get(key) or self._new_graph(key, args, padded)
            if entry is None:
                return None
        with self._lock:  # one replay at a time: the graphs share their memory
            graph, static_in, static_out = entry
            for dst, src in zip(static_in, args, strict=True):
                dst[:n].copy_(src)
                if padded > n:
                    dst[n:].zero_()
            graph.replay()
            return {name: o[:n].float().cpu().numpy()
                    for name, o in zip(self.output_names, static_out, strict=True)}

    def _new_graph(self, key: tuple[tuple[int, ...], ...], args: list[torch.Tensor],
                   padded: int) -> tuple[Any, list[Any], list[Any]] | None:
        """Capture the graph of ``key`` (the gate held alone); None where calls run
        eagerly instead (too many shapes, or the module cannot be captured)."""
        if not self.cuda_graphs or len(self._graphs) >= self.max_graphs:
            return None
        static_in = [_pad(x, padded) for x in args]
        self._warm(static_in)  # an error here is the call's, as it would be eagerly
        try:
            entry = self._capture(static_in)
        except Exception as exc:  # what capture raises varies by module
            log.warning("eager module on %s not captured as a CUDA graph (%s: %s); its "
                        "calls run eagerly", self.device, type(exc).__name__, exc)
            self.cuda_graphs = False
            self._graphs.clear()
            return None
        self._graphs[key] = entry
        return entry

    def _padded(self, n: int) -> int:
        """``n`` up to the next power of two, within the profiles' largest batch."""
        top = max((p.max[0] for p in self.profiles), default=n)
        return n if n >= top else min(1 << (n - 1).bit_length(), top)

    def _warm(self, inputs: list[torch.Tensor]) -> None:
        """Two calls outside a graph, on a side stream (workspaces allocated)."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.module(*inputs)
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, inputs: list[torch.Tensor]) -> tuple[Any, list[Any], list[Any]]:
        import torch

        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static_in = [x.clone() for x in inputs]
        graph = torch.cuda.CUDAGraph()
        with capturing(graph, self._pool):
            static_out = _as_list(self.module(*static_in))
        return graph, static_in, static_out


def _as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, list | tuple) else [out]


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` with zero rows added to a batch of ``n``."""
    import torch

    if x.shape[0] == n:
        return x
    return torch.cat([x, x.new_zeros((n - x.shape[0], *x.shape[1:]))])
