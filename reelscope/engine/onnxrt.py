"""ONNX Runtime backend (CPU by default)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from reelscope.engine.base import Runner, TensorSpec
from reelscope.errors import EngineError

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
}


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class OnnxRuntimeRunner(Runner):
    NAME = "onnxruntime"

    def __init__(self, model_path: Path, threads: int = 1, precision: str = "fp32") -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.threads = threads
        self._precision = precision
        self._session: ort.InferenceSession | None = None

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            raise EngineError("onnxruntime runner is not active")
        return self._session

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                i.name,
                _DTYPES.get(i.type, i.type),
                tuple(d if isinstance(d, int) else None for d in i.shape),
            )
            for i in self.session.get_inputs()
        )

    def activate(self) -> None:
        try:
            self._session = ort.InferenceSession(
                str(self.model_path),
                sess_options=session_options(self.threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises bare RuntimeError subclasses
            raise EngineError(f"cannot load {self.model_path}: {exc}") from exc

    def deactivate(self) -> None:
        self._session = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        try:
            values = self.session.run(names, dict(feed))
        except Exception as exc:
            raise EngineError(f"onnxruntime failed on {self.model_path.name}: {exc}") from exc
        return dict(zip(names, values, strict=True))
