"""The runner interface every inference backend implements.

A runner has a lifecycle (``with runner:`` loads, leaving frees), declares the
inputs it accepts, checks feeds against them before running, and times itself.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np

from reelscope.errors import EngineError


@dataclass(frozen=True)
class TensorSpec:
    """An input: its name, element type, and shape (None marks a dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Runner(ABC):
    """Runs one model. Subclasses set ``NAME`` and implement the abstract methods."""

    NAME: ClassVar[str]

    def __init__(self) -> None:
        self.last_inference_s = 0.0
        self._active = False

    @property
    @abstractmethod
    def precision(self) -> str:
        """fp32, fp16, bf16, int8 or fp8."""

    @property
    @abstractmethod
    def input_specs(self) -> tuple[TensorSpec, ...]: ...

    @abstractmethod
    def activate(self) -> None:
        """Load the model; called on entering ``with``."""

    @abstractmethod
    def deactivate(self) -> None:
        """Free the model; called on leaving ``with``."""

    @abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def __enter__(self) -> Self:
        if not self._active:
            self.activate()
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self.deactivate()
            self._active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._active:
            raise EngineError(f"{self.NAME} runner used outside 'with runner:'")
        self.check_feed(feed)
        start = time.perf_counter()
        out = self._infer(feed)
        self.last_inference_s = time.perf_counter() - start
        return out

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        """Reject feeds whose names, ranks or static dimensions do not fit the model."""
        for spec in self.input_specs:
            if spec.name not in feed:
                raise EngineError(
                    f"input {spec.name!r} missing; the model takes "
                    f"{[s.name for s in self.input_specs]}"
                )
            arr = feed[spec.name]
            if arr.ndim != len(spec.shape) or any(
                want is not None and got != want
                for got, want in zip(arr.shape, spec.shape, strict=True)
            ):
                raise EngineError(
                    f"input {spec.name!r} has shape {tuple(arr.shape)}, the model "
                    f"expects {_shape_text(spec.shape)}"
                )


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
