"""Eager PyTorch fp32: the reference path the gate and the benchmarks compare against."""

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
                 device: str = "cpu") -> None:
        super().__init__(profiles)
        self.module = module
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.device = device

    @property
    def precision(self) -> str:
        return "fp32"

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return specs_from_profiles(self.profiles)

    def activate(self) -> None:
        self.module = self.module.float().to(self.device).eval()

    def deactivate(self) -> None:
        pass

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device)
                    for n in self.input_names]
            out = self.module(*args)
        outs = list(out) if isinstance(out, list | tuple) else [out]
        return {n: o.float().cpu().numpy()
                for n, o in zip(self.output_names, outs, strict=True)}
