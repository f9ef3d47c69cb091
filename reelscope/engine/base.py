"""The two interfaces every engine backend implements: a builder and a runner.

A builder compiles a source model into an engine payload (bytes) for one device;
it is lazy and stateless, and states which precisions it supports. A runner has
a lifecycle (``with runner:`` loads, leaving frees), declares the inputs it
accepts, checks feeds against them and against the engine's shape profiles
before running, and times itself.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from reelscope.errors import (
    DeviceError,
    DeviceMemoryError,
    EngineError,
    ReelscopeError,
    ShapeError,
    UnsupportedBuildError,
)

if TYPE_CHECKING:
    from reelscope.engine.calibration import InputSet
    from reelscope.engine.manifest import Manifest
    from reelscope.engine.options import BuildOptions, Profile
    from reelscope.engine.source import ModelSource

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TensorSpec:
    """An input: its name, element type, and shape (None marks a dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Runner(ABC):
    """Runs one model. Subclasses set ``NAME`` and implement the abstract methods."""

    NAME: ClassVar[str]

    def __init__(self, profiles: tuple[Profile, ...] = ()) -> None:
        self.last_inference_s = 0.0
        self.profiles = profiles
        self._active = False

    @property
    @abstractmethod
    def precision(self) -> str:
        """fp32, fp16, bf16 or int8."""

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
        """The model's outputs for ``feed``; a library's or a device's failure comes out
        as reelscope's :class:`EngineError` (:class:`DeviceMemoryError` when the device ran
        out of memory, :class:`DeviceError` when it failed)."""
        if not self._active:
            raise EngineError(f"{self.NAME} runner used outside 'with runner:'")
        self.check_feed(feed)
        start = time.perf_counter()
        try:
            out = self._infer(feed)
        except ReelscopeError:
            raise
        except Exception as exc:
            raise device_error(exc, f"the {self.NAME} runner") from exc
        self.last_inference_s = time.perf_counter() - start
        return out

    def check_feed(self, feed: Mapping[str, Any]) -> None:
        """Reject feeds whose names, ranks, static dimensions or profiles do not fit."""
        for spec in self.input_specs:
            if spec.name not in feed:
                raise ShapeError(
                    f"input {spec.name!r} missing; the model takes "
                    f"{[s.name for s in self.input_specs]}"
                )
            arr = feed[spec.name]
            if arr.ndim != len(spec.shape) or any(
                want is not None and got != want
                for got, want in zip(arr.shape, spec.shape, strict=True)
            ):
                raise ShapeError(
                    f"input {spec.name!r} has shape {tuple(arr.shape)}, the model "
                    f"expects {_shape_text(spec.shape)}"
                )
        for profile in self.profiles:
            if profile.name in feed:
                profile.check(tuple(feed[profile.name].shape))


def device_error(exc: BaseException, where: str) -> EngineError:
    """A library's exception from running a model, as reelscope's error. The libraries
    say what went wrong only in their exception's type or text (torch raises
    ``OutOfMemoryError`` and ``AcceleratorError``, older versions a RuntimeError naming
    the CUDA error; ONNX Runtime a RuntimeError); this is the one place that reads them."""
    kind, text = type(exc).__name__, str(exc)
    first = text.strip().splitlines()[0] if text.strip() else kind
    lowered = text.lower()
    if isinstance(exc, MemoryError) or kind == "OutOfMemoryError" or "out of memory" in lowered \
            or "failed to allocate memory" in lowered:
        return DeviceMemoryError(f"{where}: the device ran out of memory ({first})")
    if kind == "AcceleratorError" or "cuda error" in lowered or "device-side assert" in lowered:
        return DeviceError(f"{where}: the device failed ({first})")
    return EngineError(f"{where} failed: {kind}: {first}")


def specs_from_profiles(profiles: tuple[Profile, ...]) -> tuple[TensorSpec, ...]:
    """float32 inputs as the profiles declare them (for runners of torch modules)."""
    return tuple(TensorSpec(p.name, "float32", p.declared_shape) for p in profiles)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


@dataclass(frozen=True)
class BuildJob:
    """Everything a builder needs; ``workdir`` is a private scratch folder."""

    source: ModelSource
    options: BuildOptions
    profiles: tuple[Profile, ...]
    inputs: InputSet | None
    workdir: Path
    cache_dir: Path | None
    progress: Progress


@dataclass(frozen=True)
class Candidate:
    """One compiled engine to put through the accuracy gate; ``notes`` go to the manifest."""

    payload: bytes
    notes: dict[str, Any] = field(default_factory=dict)


class Builder(ABC):
    """Compiles models for one backend. Subclasses set the class attributes."""

    NAME: ClassVar[str]
    PAYLOAD: ClassVar[str]  # the payload's format, recorded in the manifest
    PRECISIONS: ClassVar[Mapping[str, tuple[str, ...]]]  # device kind -> precisions

    @classmethod
    @abstractmethod
    def available(cls, device: str) -> bool:
        """Whether this backend can build and run on ``device`` (cpu, cuda:N) here."""

    @classmethod
    @abstractmethod
    def environment(cls, device: str) -> dict[str, str]:
        """What an engine built here is bound to: versions, device, driver."""

    @abstractmethod
    def candidates(self, job: BuildJob) -> Iterator[Candidate]:
        """Compiled engines, best first; the compiler keeps the first that passes the gate
        (e.g. all layers in int8, then with sensitive layers left in higher precision)."""

    @abstractmethod
    def runner(self, payload: bytes, manifest: Manifest, device: str, threads: int) -> Runner:
        """A runner over a payload this builder made, described by its manifest."""

    @classmethod
    def check_precision(cls, precision: str, device: str) -> None:
        kind = device.split(":")[0]
        allowed = cls.PRECISIONS.get(kind, ())
        if precision not in allowed:
            raise UnsupportedBuildError(
                f"the {cls.NAME} backend cannot build {precision} for {kind}; it builds "
                f"{', '.join(allowed) or 'nothing'} there"
            )
