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
