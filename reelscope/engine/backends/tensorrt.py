"""TensorRT backend: ONNX parser, builder config, optimization profiles, FP16/BF16/INT8
flags, an INT8 entropy calibrator with its cache, a timing cache, a serialized plan.

Written against TensorRT 10's documented Python API and type-checked with the
published ``tensorrt-stubs``. TensorRT cannot be installed where reelscope is
developed, so this backend has never run here: the registry lists it only when
a real ``tensorrt`` imports. Device buffers come from PyTorch (no pycuda).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorrt as trt
import torch

from reelscope.engine.backends.inductor import gpu_identity, resolve_device
from reelscope.engine.base import Builder, BuildJob, Candidate, Runner, TensorSpec
from reelscope.engine.manifest import Manifest
from reelscope.errors import EngineError, UnsupportedBuildError
from reelscope.gpu.gate import GATE

WORKSPACE_BYTES = 4 << 30
_LOGGER = trt.Logger(trt.Logger.WARNING)
_TORCH_DTYPES = {
    trt.DataType.FLOAT: torch.float32,
    trt.DataType.HALF: torch.float16,
    trt.DataType.BF16: torch.bfloat16,
    trt.DataType.INT8: torch.int8,
    trt.DataType.INT32: torch.int32,
    trt.DataType.INT64: torch.int64,
    trt.DataType.BOOL: torch.bool,
}


def is_real() -> bool:
    """True only for the real library, not the stubs' namespace package."""
    return hasattr(trt, "Builder")


class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
    """Feeds calibration batches from device memory; reads and writes TensorRT's cache."""

    def __init__(self, data: np.ndarray, batch: int, cache: Path | None) -> None:
        trt.IInt8EntropyCalibrator2.__init__(self)
        self.data = data
        self.batch = batch
        self.cache = cache
        self.index = 0
        self.device_input = torch.empty((batch, *data.shape[1:]), dtype=torch.float32,
                                        device="cuda")

    def get_batch_size(self) -> int:
        return self.batch

    def get_batch(self, names: list[str]) -> list[int]:
        if self.index + self.batch > len(self.data):
            return []
        chunk = self.data[self.index : self.index + self.batch]
        self.device_input.copy_(torch.from_numpy(np.ascontiguousarray(chunk)))
        self.index += self.batch
        return [int(self.device_input.data_ptr())]

    def read_calibration_cache(self) -> bytes:
        if self.cache is not None and self.cache.is_file():
            return self.cache.read_bytes()
        return b""

    def write_calibration_cache(self, cache: memoryview | bytes) -> None:
        if self.cache is not None:
            self.cache.write_bytes(bytes(cache))


class TensorRTBuilder(Builder):
    NAME = "tensorrt"
    PAYLOAD = "tensorrt-plan"
    PRECISIONS: ClassVar[Mapping[str, tuple[str, ...]]] = {"cuda": ("fp32", "fp16", "bf16", "int8")}

    @classmethod
    def available(cls, device: str) -> bool:
        return is_real() and device.startswith("cuda") and torch.cuda.is_available()

    @classmethod
    def environment(cls, device: str) -> dict[str, str]:
        return {"backend": cls.NAME, "tensorrt": trt.__version__, **gpu_identity(device)}

    def candidates(self, job: BuildJob) -> Iterator[Candidate]:
        precision = job.options.precision
        builder = trt.Builder(_LOGGER)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, _LOGGER)
        onnx_path = job.source.onnx_path(job.workdir, job.profiles)
        job.progress("parsing the ONNX model")
        if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        elif precision == "int8":
            if job.inputs is None:
                raise UnsupportedBuildError("int8 needs calibration inputs (--calibration PATH)")
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)  # layers without int8 kernels fall to fp16
            cache = self._cache_file(job, f"int8-{job.inputs.digest[:16]}.calib")
            config.int8_calibrator = EntropyCalibrator(job.inputs.calibration, 16, cache)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            p = next((p for p in job.profiles if p.name == tensor.name), None)
            if p is None:
                raise UnsupportedBuildError(f"give a profile for input {tensor.name!r}")
            profile.set_shape(tensor.name, trt.Dims(p.min), trt.Dims(p.opt), trt.Dims(p.max))
        config.add_optimization_profile(profile)
        if precision == "int8":
            config.set_calibration_profile(profile)
        timing_file = self._cache_file(job, "timing.cache")
        timing = config.create_timing_cache(
            timing_file.read_bytes() if timing_file is not None and timing_file.is_file() else b""
        )
        config.set_timing_cache(timing, False)
        job.progress("building the TensorRT engine (kernel auto-tuning)")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError("TensorRT could not build the engine (see its log above)")
        if timing_file is not None:
            timing_file.write_bytes(bytes(config.get_timing_cache().serialize()))
        yield Candidate(bytes(plan), {"builder": f"TensorRT {trt.__version__}",
                                      "calibrator": "entropy v2" if precision == "int8" else ""})

    @staticmethod
    def _cache_file(job: BuildJob, name: str) -> Path | None:
        if job.cache_dir is None:
            return None
        folder = job.cache_dir / "tensorrt"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{job.source.sha256[:16]}-{name}"

    def runner(self, payload: bytes, manifest: Manifest, device: str, threads: int) -> Runner:
        return TensorRTRunner(payload, manifest, resolve_device(device))


class TensorRTRunner(Runner):
    NAME = "tensorrt"

    def __init__(self, payload: bytes, manifest: Manifest, device: str) -> None:
        super().__init__(manifest.profiles)
        self.payload = payload
        self.manifest = manifest
        self.device = device
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    def activate(self) -> None:
        torch.cuda.set_device(torch.device(self.device))
        runtime = trt.Runtime(_LOGGER)
        engine = runtime.deserialize_cuda_engine(self.payload)
        if engine is None:
            raise EngineError("TensorRT cannot deserialize the plan (other TensorRT version?)")
        self._engine = engine
        self._context = engine.create_execution_context()

    def deactivate(self) -> None:
        self._context = None
        self._engine = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with GATE.shared():  # see gpu.gate: CUDA graph captures wait for the GPU's work
            return self._run(feed)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._engine is None or self._context is None:
            raise EngineError("tensorrt runner is not active")
        engine, context = self._engine, self._context
        keep: list[torch.Tensor] = []
        outputs: dict[str, torch.Tensor] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = _TORCH_DTYPES[engine.get_tensor_dtype(name)]
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                x = torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device, dtype)
                context.set_input_shape(name, tuple(x.shape))
                context.set_tensor_address(name, x.data_ptr())
                keep.append(x)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=_TORCH_DTYPES[engine.get_tensor_dtype(name)],
                                  device=self.device)
                context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed")
        stream.synchronize()
        return {name: t.float().cpu().numpy() for name, t in outputs.items()}
