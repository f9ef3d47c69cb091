"""Fault injection into real engines: damaged weights, NaN outputs, raising runners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from reelscope.engine import artifact


def perturb_engine(src: Path, dst: Path, scale: float, seed: int = 0) -> Path:
    """A copy of an ONNX Runtime engine whose convolution weights got Gaussian noise
    (``scale`` x each tensor's std), the manifest (and its monitor reference) kept:
    an engine gone wrong silently, as a bad driver or a bad calibration would."""
    manifest, payload = artifact.read(src)
    model = onnx.load_from_string(payload)
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.dtype == np.float32:
            noisy = w + rng.normal(0.0, scale * float(w.std()), w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    artifact.write(dst, manifest, model.SerializeToString())
    return dst


def nan_engine(src: Path, dst: Path) -> Path:
    """A copy whose first convolution's weights hold NaN: every output is NaN."""
    manifest, payload = artifact.read(src)
    model = onnx.load_from_string(payload)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4:
            w = w.copy()
            w.flat[0] = np.nan
            init.CopyFrom(numpy_helper.from_array(w, init.name))
            break
    artifact.write(dst, manifest, model.SerializeToString())
    return dst


def flattened_engine(src: Path, dst: Path, factor: float, output: str = "logits") -> Path:
    """A copy whose class scores (``output``) are multiplied by ``factor``: every
    top-1 class stays the same, only the confidences move (an engine whose output
    scale went wrong, which no top-1 comparison can see)."""
    manifest, payload = artifact.read(src)
    model = onnx.load_from_string(payload)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    scaled = 0
    name = output
    while name in producers:
        node = producers[name]
        params = [i for i in node.input if i in inits]
        for p in params:
            w = numpy_helper.to_array(inits[p]) * np.float32(factor)
            inits[p].CopyFrom(numpy_helper.from_array(w.astype(np.float32), p))
            scaled += 1
        if node.op_type in ("Gemm", "MatMul"):
            break
        if node.op_type != "Add":
            raise ValueError(f"{output} comes from {node.op_type}, not a linear layer")
        name = next(i for i in node.input if i not in inits)
    if not scaled:
        raise ValueError(f"no weights found for {output}")
    artifact.write(dst, manifest, model.SerializeToString())
    return dst
