"""Eager PyTorch: the fp32 reference the gate and the benchmarks compare against, and the
runner of a model the torch backend cannot compile (on a GPU, in reduced precision)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from reelscope.engine.base import Runner, TensorSpec, specs_from_profiles
from reelscope.engine.options import Profile

if TYPE_CHECKING:
    import torch


class EagerRunner(Runner):
    NAME = "torch-eager"

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str],
                 output_names: Sequence[str], profiles: tuple[Profile, ...] = (),
                 device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(profiles)
        self.module = module
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.device = device
        self._precision = precision

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
        pass

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device,
                                                                        self.dtype)
                    for n in self.input_names]
            out = self.module(*args)
        outs = list(out) if isinstance(out, list | tuple) else [out]
        return {n: o.float().cpu().numpy()
                for n, o in zip(self.output_names, outs, strict=True)}
