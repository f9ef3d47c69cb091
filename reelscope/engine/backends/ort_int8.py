"""INT8 for the ONNX Runtime backend: static QDQ quantization with per-layer fallback.

The candidates the accuracy gate sees, in order:

1. every quantizable layer in int8;
2. then the most sensitive layers kept in fp32: the worst 1, 2, 4, 8, ... of them,
   up to half of the layers.

Sensitivity is measured, not guessed: each layer is quantized alone (everything else
stays fp32) and scored by how far it moves the model's outputs from the fp32 model's on
a subset of the *calibration* inputs (KL divergence for class outputs, relative squared
error for feature outputs). The gate's held-out inputs are never used to rank layers.
The ranking is cached beside the calibration table, so a rebuild does not measure again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from reelscope.engine import gate

# compute layers ORT quantizes in QDQ form that are worth keeping in fp32 one by one
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul")
SENSITIVITY_INPUTS = 64  # calibration inputs each layer is scored on
_EPS = 1e-12


class _Reader:
    """Feeds calibration inputs to ORT's calibrator in batches."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 16) -> None:
        self._batches = iter([{name: data[i : i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@dataclass(frozen=True)
class Quantizer:
    """One quantization recipe over one prepared graph; ``quantize`` varies the layers kept."""

    prepared: Path  # after quant_pre_process
    input_name: str
    calibration: np.ndarray
    calibration_cache: Path  # MinMax ranges, written by the first call, then reused
    weights_7bit: bool  # x86 without VNNI: full-range weights saturate u8s8 kernels

    def quantize(self, exclude: Sequence[str], target: Path) -> Path:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        quantize_static(
            str(self.prepared), str(target),
            calibration_data_reader=_Reader(self.input_name, self.calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=list(exclude),
            reduce_range=self.weights_7bit,
            calibration_cache_path=str(self.calibration_cache),
        )
        return target


def layers(model: onnx.ModelProto) -> list[str]:
    """The graph's quantizable compute layers, in graph order."""
    return [n.name for n in model.graph.node if n.op_type in LAYER_OPS and n.name]


def fallback_sizes(n_layers: int) -> list[int]:
    """How many of the worst layers each fallback candidate keeps in fp32: 1, 2, 4, ...,
    never more than half of them (an int8 engine keeps most of its layers in int8)."""
    sizes, k = [], 1
    while k <= n_layers // 2:
        sizes.append(k)
        k *= 2
    return sizes


def distance(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
             class_outputs: Sequence[str] | None) -> float:
    """How far ``got`` is from ``reference``, summed over outputs (0 = identical)."""
    total = 0.0
    for name, ref in reference.items():
        out = got[name]
        if gate.is_class_output(name, class_outputs):
            p, q = gate.probabilities(ref), gate.probabilities(out)
            total += float(np.mean(np.sum(p * (np.log(p + _EPS) - np.log(q + _EPS)), axis=1)))
        else:
            r, o = ref.astype(np.float64), out.astype(np.float64)
            total += float(np.mean((o - r) ** 2) / (np.mean(r**2) + _EPS))
    return total


Run = Callable[[Path], dict[str, np.ndarray]]


def rank_layers(quantizer: Quantizer, names: Sequence[str], run: Run, source: Path,
                workdir: Path, cache: Path | None,
                progress: Callable[[str], None],
                class_outputs: Sequence[str] | None) -> list[tuple[str, float]]:
    """``names`` from the most to the least sensitive, each with its measured distance."""
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        if saved and {n for n, _ in saved} == set(names):
            progress(f"layer sensitivity: reusing {cache.name}")
            return [(str(n), float(d)) for n, d in saved]
    ref = run(source)
    scores: list[tuple[str, float]] = []
    started = time.perf_counter()
    for i, name in enumerate(names):
        if i % 10 == 0:
            progress(f"layer sensitivity: {i}/{len(names)} layers quantized alone "
                     f"({time.perf_counter() - started:.0f} s)")
        alone = quantizer.quantize([n for n in names if n != name], workdir / "alone.onnx")
        scores.append((name, distance(ref, run(alone), class_outputs)))
    ranked = sorted(scores, key=lambda s: -s[1])
    if cache is not None:
        cache.write_text(json.dumps(ranked))
    return ranked


def runner_for(inputs: np.ndarray, input_name: str, options: ort.SessionOptions,
               disabled: Sequence[str], batch: int = 32) -> Run:
    """Run a model file over ``inputs`` with ORT's optimizations (the int8 kernels that
    will really run, saturation included) and return every output."""

    def run(model: Path) -> dict[str, np.ndarray]:
        session = ort.InferenceSession(str(model), sess_options=options,
                                       providers=["CPUExecutionProvider"],
                                       disabled_optimizers=list(disabled))
        names = [o.name for o in session.get_outputs()]
        parts = [session.run(names, {input_name: inputs[i : i + batch]})
                 for i in range(0, len(inputs), batch)]
        return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}

    return run
