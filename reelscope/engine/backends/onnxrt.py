"""ONNX Runtime backend (the CPU default).

Build: the graph is optimized at ``ORT_ENABLE_ALL`` (constant folding, Conv+BN+
activation fusion, the NCHWc blocked layout for this CPU's vector width) and the
optimized graph is the payload, so loading does not optimize again. INT8 is
static QDQ quantization (per-channel int8 weights, uint8 activations, MinMax
ranges from the calibration inputs, cached); when the gate rejects it, the next
candidates keep the most sensitive layers (stem, head, then depthwise
convolutions) in fp32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort

from reelscope.engine.base import Builder, BuildJob, Candidate, Runner, TensorSpec
from reelscope.engine.manifest import Manifest, cpu_identity
from reelscope.engine.options import Profile
from reelscope.errors import EngineError, UnsupportedBuildError

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
}
# ORT 1.32: this optimizer breaks models where some nodes were left unquantized
_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def session_options(threads: int, optimize: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model from a file or from bytes. ``optimize=False`` loads an
    engine payload, whose graph was optimized at build time, as it is."""

    NAME = "onnxruntime"

    def __init__(self, model: Path | bytes, threads: int = 1, precision: str = "fp32",
                 optimize: bool = True, profiles: tuple[Profile, ...] = ()) -> None:
        super().__init__(profiles)
        self.model = model if isinstance(model, bytes) else Path(model)
        self.threads = threads
        self.optimize = optimize
        self._precision = precision
        self._session: ort.InferenceSession | None = None

    @property
    def label(self) -> str:
        return "engine payload" if isinstance(self.model, bytes) else self.model.name

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

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.session.get_outputs())

    def activate(self) -> None:
        model = self.model if isinstance(self.model, bytes) else str(self.model)
        try:
            self._session = ort.InferenceSession(
                model,
                sess_options=session_options(self.threads, self.optimize),
                providers=["CPUExecutionProvider"],
                disabled_optimizers=_DISABLED_OPTIMIZERS,
            )
        except Exception as exc:  # onnxruntime raises bare RuntimeError subclasses
            raise EngineError(f"onnxruntime cannot load {self.label}: {exc}") from exc

    def deactivate(self) -> None:
        self._session = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.output_names)
        try:
            values = self.session.run(names, dict(feed))
        except Exception as exc:
            raise EngineError(f"onnxruntime failed on {self.label}: {exc}") from exc
        return dict(zip(names, values, strict=True))


class _Reader:
    """Feeds calibration inputs to ORT's calibrator in batches."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 16) -> None:
        self._batches = iter([{name: data[i : i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def optimize_offline(model: Path, target: Path, threads: int) -> bytes:
    """Optimize at ORT_ENABLE_ALL and save the result: the engine payload."""
    opts = session_options(threads)
    opts.optimized_model_filepath = str(target)
    try:
        ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=_DISABLED_OPTIMIZERS)
    except Exception as exc:
        raise EngineError(f"onnxruntime cannot optimize {model.name}: {exc}") from exc
    return target.read_bytes()


def has_int8_dot_product() -> bool:
    """x86 without VNNI multiplies u8 x s8 pairs into saturating int16 (vpmaddubsw), which
    ruins full-range int8 weights; there, weights are quantized to 7 bits instead."""
    ident = cpu_identity()
    if ident["arch"] not in ("x86_64", "AMD64", "i686"):
        return True
    return any(f in ident["cpu_flags"].split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _sensitive_nodes(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """Layer groups to keep in fp32, in the order they are tried: stem + head, then
    depthwise convolutions (which quantize worst)."""
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    heads = [n for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    stem_head = [n.name for n in convs[:1] + heads]
    depthwise = [
        n.name for n in convs
        if any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    groups = [("stem and head", stem_head)]
    if depthwise:
        groups.append((f"stem, head and {len(depthwise)} depthwise convolutions",
                       stem_head + depthwise))
    return groups


class OnnxRuntimeBuilder(Builder):
    NAME = "onnxruntime"
    PAYLOAD = "onnx"
    # the CPU execution provider has no fp16 convolutions
    PRECISIONS: ClassVar[Mapping[str, tuple[str, ...]]] = {"cpu": ("fp32", "int8")}

    @classmethod
    def available(cls, device: str) -> bool:
        return device == "cpu"

    @classmethod
    def environment(cls, device: str) -> dict[str, str]:
        return {"backend": cls.NAME, "onnxruntime": ort.__version__, **cpu_identity()}

    def candidates(self, job: BuildJob) -> Iterator[Candidate]:
        threads = job.options.threads or os.cpu_count() or 1
        source = job.source.onnx_path(job.workdir, job.profiles)
        if job.options.precision == "fp32":
            job.progress("optimizing the graph (ORT_ENABLE_ALL: fusion, layout)")
            payload = optimize_offline(source, job.workdir / "optimized.onnx", threads)
            yield Candidate(payload, {"graph_optimization": "ORT_ENABLE_ALL",
                                      **_node_counts(source, payload)})
            return
        if job.options.precision != "int8":
            raise UnsupportedBuildError(f"onnxruntime cannot build {job.options.precision}")
        yield from self._int8(job, source, threads)

    def _int8(self, job: BuildJob, source: Path, threads: int) -> Iterator[Candidate]:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if job.inputs is None:
            raise UnsupportedBuildError("int8 needs calibration inputs (--calibration PATH)")
        name = job.profiles[0].name
        pre = job.workdir / "pre.onnx"
        job.progress("preparing the graph for quantization (shape inference, folding)")
        with _quiet():
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        cache = None
        if job.cache_dir is not None and job.options.calibration.cache:
            cache = (job.cache_dir / "calibration" /
                     f"{job.source.sha256[:16]}-{job.inputs.digest[:16]}-minmax.json")
            cache.parent.mkdir(parents=True, exist_ok=True)
        cache_hit = cache is not None and cache.is_file()
        reduce_range = not has_int8_dot_product()
        plans: list[tuple[str, list[str]]] = [("none", [])]
        if job.options.int8_fallback:
            plans += _sensitive_nodes(onnx.load(str(pre)))
        for i, (kept, exclude) in enumerate(plans):
            job.progress(
                "calibrating (MinMax) and quantizing to int8" if i == 0
                else f"int8 again, keeping {kept} in fp32"
            )
            quantized = job.workdir / f"int8-{i}.onnx"
            with _quiet():
                quantize_static(
                    str(pre), str(quantized),
                    calibration_data_reader=_Reader(name, job.inputs.calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=exclude,
                    reduce_range=reduce_range,
                    calibration_cache_path=str(cache) if cache else None,
                )
            payload = optimize_offline(quantized, job.workdir / f"int8-{i}-opt.onnx", threads)
            yield Candidate(payload, {
                "graph_optimization": "ORT_ENABLE_ALL",
                "quantization": "QDQ, per-channel int8 weights, uint8 activations, MinMax",
                "calibration_inputs": len(job.inputs.calibration),
                "calibration_cache": ("reused" if cache_hit or i else "written") if cache
                else "off",
                "weights_7bit": reduce_range,
                "kept_fp32": kept,
                "kept_fp32_nodes": len(exclude),
                **_node_counts(source, payload),
            })

    def runner(self, payload: bytes, manifest: Manifest, device: str, threads: int) -> Runner:
        return OnnxRuntimeRunner(payload, threads=threads or os.cpu_count() or 1,
                                 precision=manifest.precision, optimize=False,
                                 profiles=manifest.profiles)


def _node_counts(source: Path, payload: bytes) -> dict[str, Any]:
    before = onnx.load(str(source))
    after = onnx.load_from_string(payload)
    return {"nodes_source": len(before.graph.node), "nodes_engine": len(after.graph.node),
            "engine_ops": _op_summary(after.graph.node)}


def _op_summary(nodes: Sequence[onnx.NodeProto]) -> str:
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{op} {n}" for op, n in top)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantization tools log warnings through the root logger; keep them down."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
