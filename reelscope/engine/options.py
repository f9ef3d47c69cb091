"""Typed build options: precision, shape profiles, calibration and the accuracy gate."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reelscope.errors import ConfigError, ShapeError

# Offered only where some backend builds it (fp8: none does; see BENCHMARKS.md)
Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
Normalization = Literal["symmetric", "imagenet", "unit"]
NORMALIZATIONS: tuple[str, ...] = ("symmetric", "imagenet", "unit")
RebuildPolicy = Literal["auto", "never"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """The shapes one dynamic input accepts, as in TensorRT: every dimension of an input
    lies between ``min`` and ``max``; ``opt`` is the shape the engine is tuned for."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ConfigError(f"profile {self.name!r}: min, opt and max differ in rank")
        for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True):
            if not 1 <= lo <= mid <= hi:
                raise ConfigError(
                    f"profile {self.name!r}: needs 1 <= min <= opt <= max in every "
                    f"dimension, got {self.text()}"
                )

    @classmethod
    def parse(cls, text: str) -> Profile:
        """``name=1x3x224x224:8x3x224x224:32x3x224x224`` (min:opt:max); one shape alone
        fixes the input to it."""
        m = re.fullmatch(r"\s*([^=\s]+)\s*=\s*([\dx:]+)\s*", text)
        if not m:
            raise ConfigError(
                f"bad profile {text!r}: expected NAME=MIN:OPT:MAX with shapes like 1x3x224x224"
            )
        parts = m.group(2).split(":")
        if len(parts) not in (1, 3):
            raise ConfigError(f"bad profile {text!r}: give one shape or three (min:opt:max)")
        try:
            shapes = [tuple(int(d) for d in p.split("x")) for p in parts]
        except ValueError:
            raise ConfigError(f"bad profile {text!r}: dimensions must be integers") from None
        if len(shapes) == 1:
            shapes *= 3
        return cls(m.group(1), shapes[0], shapes[1], shapes[2])

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, (lo, hi) in enumerate(zip(self.min, self.max, strict=True))
                     if lo != hi)

    @property
    def declared_shape(self) -> tuple[int | None, ...]:
        """The shape as an input declares it: None on the dynamic axes."""
        return tuple(None if i in self.dynamic_axes else d for i, d in enumerate(self.opt))

    def check(self, shape: Shape) -> None:
        if len(shape) != len(self.min) or any(
            not lo <= d <= hi for d, lo, hi in zip(shape, self.min, self.max, strict=True)
        ):
            raise ShapeError(
                f"input {self.name!r} has shape {_fmt(shape)}, outside the engine's profile "
                f"{_fmt(self.min)} .. {_fmt(self.max)}"
            )

    def text(self) -> str:
        return f"{self.name}={_fmt(self.min)}:{_fmt(self.opt)}:{_fmt(self.max)}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt),
                "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        return cls(str(d["name"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class GateThresholds:
    """An engine is accepted only when it agrees this well with the fp32 reference.

    Class-score outputs are judged by top-1 agreement (over all held-out inputs, and
    over the *confident* ones, where fp32's top-2 probability margin is at least
    ``confident_margin``) and top-5 overlap; other outputs by cosine similarity."""

    top1: float = field(default=0.99, metadata={"help": "top-1 agreement, fp16/bf16/fp32"})
    top1_confident_int8: float = field(
        default=0.99, metadata={"help": "top-1 agreement on confident inputs, int8"})
    top1_int8: float = field(
        default=0.80, metadata={"help": "top-1 agreement on all inputs, int8 (guards "
                                        "against wholesale damage hidden by few confident inputs)"})
    top5_overlap: float = field(default=0.80, metadata={"help": "mean top-5 set overlap"})
    cosine: float = field(default=0.99, metadata={"help": "mean cosine similarity, features"})
    confident_margin: float = field(
        default=0.05, metadata={"help": "fp32 top-2 margin from which an input is confident"})
    min_confident: int = field(
        default=20, metadata={"help": "fewest confident inputs for the confident check"})

    def to_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class CalibrationOptions:
    """Where calibration and held-out inputs come from and how they are prepared."""

    source: str = ""  # a folder of images/videos, or one video; "" = none
    holdout_source: str = ""  # pictures for the gate only; "" = held out from ``source``
    # pictures or videos like the traffic: their centre crops, through the fp32 reference,
    # give the confidence distribution that online drift is measured against;
    # "" = the held-out inputs
    reference_source: str = ""
    samples: int = 256  # calibration inputs (crops) generated
    holdout: int = 128  # held-out inputs for the accuracy gate
    normalization: Normalization = "imagenet"
    seed: int = 0
    cache: bool = True  # reuse prepared inputs and the calibration table on rebuild

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {self.normalization!r}"
            )
        if self.samples < 1 or self.holdout < 1:
            raise ConfigError("calibration samples and holdout must be positive")


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "auto"
    precision: Precision = "fp32"
    profiles: tuple[Profile, ...] = ()
    device: str = "auto"  # cpu, cuda, cuda:N, auto
    calibration: CalibrationOptions = CalibrationOptions()
    gate: GateThresholds = GateThresholds()
    class_outputs: tuple[str, ...] | None = None  # None: outputs named like logits/probs
    threads: int = 0  # CPU threads for building and for the gate; 0 = all
    autotune: bool = False  # kernel auto-tuning (torch: Inductor max-autotune)
    cuda_graphs: bool = True  # torch on CUDA: replay captured graphs per batch size
    int8_fallback: bool = True  # int8 under the gate: keep sensitive layers in fp32

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ConfigError(f"two profiles for one input: {names}")

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)
