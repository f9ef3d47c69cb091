"""ONNX Runtime backend (the CPU default).

Build: the graph is optimized at ``ORT_ENABLE_ALL`` (constant folding, Conv+BN+
activation fusion, the NCHWc blocked layout for this CPU's vector width) and the
optimized graph is the payload, so loading does not optimize again. INT8 is
static QDQ quantization (per-channel int8 weights, uint8 activations, MinMax
ranges from the calibration inputs, cached); when the gate rejects it, the next
candidates keep the layers measured to be the most sensitive in fp32
(``ort_int8``).
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

from reelscope.engine.backends import ort_int8
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
    # ONNX Runtime's CPU arena keeps the largest activations of every session for good
    # (about 0.4 GB over an analysis); without it the memory goes back after each call
    # at no measurable cost in speed (BENCHMARKS.md, long videos)
    opts.enable_cpu_mem_arena = False
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
        values = self.session.run(names, dict(feed))  # errors: Runner.infer translates them
        return dict(zip(names, values, strict=True))


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
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if job.inputs is None:
            raise UnsupportedBuildError("int8 needs calibration inputs (--calibration PATH)")
        name = job.profiles[0].name
        pre = job.workdir / "pre.onnx"
        job.progress("preparing the graph for quantization (shape inference, folding)")
        with _quiet():
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        tables = None
        if job.cache_dir is not None and job.options.calibration.cache:
            tables = job.cache_dir / "calibration"
            tables.mkdir(parents=True, exist_ok=True)
        stem = f"{job.source.sha256[:16]}-{job.inputs.digest[:16]}"
        # without a cache folder the ranges still serve every candidate of this build
        calib_cache = (tables or job.workdir) / f"{stem}-minmax.json"
        cache_hit = tables is not None and calib_cache.is_file()
        weights_7bit = not has_int8_dot_product()
        quantizer = ort_int8.Quantizer(pre, name, job.inputs.calibration, calib_cache,
                                       weights_7bit)

        def candidate(i: int, kept: Sequence[str], note: str) -> Candidate:
            quantized = job.workdir / f"int8-{i}.onnx"
            with _quiet():
                quantizer.quantize(kept, quantized)
            payload = optimize_offline(quantized, job.workdir / f"int8-{i}-opt.onnx", threads)
            return Candidate(payload, {
                "graph_optimization": "ORT_ENABLE_ALL",
                "quantization": "QDQ, per-channel int8 weights, uint8 activations, MinMax",
                "calibration_inputs": len(quantizer.calibration),
                "calibration_cache": ("reused" if cache_hit or i else "written")
                if tables else "off",
                "weights_7bit": quantizer.weights_7bit,
                "kept_fp32": note,
                "kept_fp32_nodes": len(kept),
                "kept_fp32_layers": list(kept),
                **_node_counts(source, payload),
            })

        job.progress("calibrating (MinMax) and quantizing every layer to int8")
        yield candidate(0, [], "none")
        if not job.options.int8_fallback:
            return
        names = ort_int8.layers(onnx.load(str(pre)))
        subset = job.inputs.calibration[:: max(1, len(job.inputs.calibration)
                                               // ort_int8.SENSITIVITY_INPUTS)]
        run = ort_int8.runner_for(subset[: ort_int8.SENSITIVITY_INPUTS], name,
                                  session_options(threads), _DISABLED_OPTIMIZERS,
                                  batch=min(32, job.profiles[0].max[0]))
        job.progress(f"int8 under the gate: measuring how much each of {len(names)} layers "
                     "hurts when quantized alone")
        with _quiet():
            ranked = ort_int8.rank_layers(
                quantizer, names, run, source, job.workdir,
                tables / f"{stem}-w{7 if weights_7bit else 8}-sensitivity.json"
                if tables else None,
                job.progress, job.options.class_outputs)
        worst = ", ".join(f"{n} ({d:.2g})" for n, d in ranked[:3])
        job.progress(f"most sensitive layers: {worst}")
        for i, k in enumerate(ort_int8.fallback_sizes(len(ranked)), start=1):
            job.progress(f"int8 again, keeping the {k} most sensitive layers in fp32")
            yield candidate(i, [n for n, _ in ranked[:k]],
                            f"the {k} most sensitive of {len(ranked)} layers")

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
