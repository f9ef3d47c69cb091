"""Eager PyTorch: the fp32 reference the gate and the benchmarks compare against, and the
runner of a model the torch backend cannot compile (on a GPU, in reduced precision).

On a GPU such a module can run as CUDA graphs (``cuda_graphs``,
:class:`reelscope.gpu.graphs.CudaGraphs`): one captured per input shape, the batch padded
to a power of two; calls run eagerly where a module cannot be captured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from reelscope.engine.base import Runner, TensorSpec, specs_from_profiles
from reelscope.engine.options import Profile
from reelscope.gpu.gate import GATE
from reelscope.gpu.graphs import CudaGraphs, WithGraphs, as_list

if TYPE_CHECKING:
    import torch


class EagerRunner(Runner, WithGraphs):
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
        top = max((p.max[0] for p in profiles), default=0)  # 0: no padding
        self.graph_cache = CudaGraphs(lambda *xs: self.module(*xs), top, max_graphs,
                                      f"eager module on {device}")
        self.graph_cache.enabled = cuda_graphs and device.startswith("cuda")

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
        self.graph_cache.clear()

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode(), GATE.shared():
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device,
                                                                        self.dtype)
                    for n in self.input_names]
            outs = self.graph_cache.run(args, _to_host) if self.cuda_graphs else None
            if outs is None:
                outs = [_to_host(o) for o in as_list(self.module(*args))]
            return dict(zip(self.output_names, outs, strict=True))


def _to_host(x: torch.Tensor) -> np.ndarray:
    return x.float().cpu().numpy()
