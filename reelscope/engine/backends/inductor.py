"""PyTorch backend (the GPU default): torch.export, then
torch.compile (Inductor); the payload holds the exported program and Inductor's
portable cache artifacts (generated kernels, Triton binaries, autotuning results).

Loading compiles the program again from those artifacts: every graph is a cache
hit, no kernel is generated or tuned again (``TorchRunner.cache_hits`` counts
them). AOTInductor packages would need no compile step at all, but loading one
crashed under torch 2.11 (BENCHMARKS.md). On CUDA,
4-D inputs use the channels-last layout (tensor-core convolutions), the weights
are cast to fp16/bf16 as asked, and calls replay CUDA graphs
(:class:`reelscope.gpu.graphs.CudaGraphs`: one per batch size, padded to a power of
two). ONNX sources are converted with onnx2torch.
int8 is refused: PyTorch has no int8 convolution kernels that Inductor uses on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from reelscope.engine.base import (
    Builder,
    BuildJob,
    Candidate,
    Runner,
    TensorSpec,
    specs_from_profiles,
)
from reelscope.engine.manifest import Manifest, cpu_identity
from reelscope.engine.onnx_fold import FoldError, fold_shapes
from reelscope.engine.options import Profile
from reelscope.errors import EngineError, UnsupportedBuildError
from reelscope.gpu.gate import GATE
from reelscope.gpu.graphs import CudaGraphs, WithGraphs, as_list

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    return device


def gpu_identity(device: str) -> dict[str, str]:
    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda": str(torch.version.cuda),
        "driver": _driver_version(),
    }


def _driver_version() -> str:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for word in text.split():
            if word.count(".") >= 1 and word.replace(".", "").isdigit():
                return word
    except OSError:
        pass
    return "unknown"


def _layout(device: str, ndim: int) -> torch.memory_format:
    if device.startswith("cuda") and ndim == 4:
        return torch.channels_last
    return torch.contiguous_format


# Dynamo and Inductor compile one graph at a time per process: two models compiled from two
# threads at once (a runtime loads its models side by side) fail with errors such as
# "Attempt to trace generator". Every compile, and every call that may compile, holds this.
_COMPILE_LOCK = threading.RLock()


class TorchBuilder(Builder):
    NAME = "torch"
    PAYLOAD = "torch-export+inductor-cache"
    PRECISIONS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}

    @classmethod
    def available(cls, device: str) -> bool:
        return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())

    @classmethod
    def environment(cls, device: str) -> dict[str, str]:
        env = {"backend": cls.NAME, "torch": torch.__version__.split("+")[0],
               "torch_build": torch.__version__}
        if device.startswith("cuda"):
            env.update(gpu_identity(device))
        else:
            env.update(cpu_identity())
        return env

    def candidates(self, job: BuildJob) -> Iterator[Candidate]:
        device = resolve_device(job.options.device)
        dtype = DTYPES[job.options.precision]
        job.progress(f"loading the module ({job.source.kind})")
        net = copy.deepcopy(job.source.torch_module())
        if isinstance(net, torch.fx.GraphModule):  # converted from ONNX
            try:
                net = fold_shapes(net)
            except FoldError as exc:  # as converted: torch.export says what it cannot trace
                job.progress(f"shape arithmetic left as tensors: {exc}")
        net = net.to(device=device, dtype=dtype)
        names = job.source.input_names(job.profiles)
        examples, dynamic = [], []
        for name in names:
            p = next(p for p in job.profiles if p.name == name)
            x = torch.randn(*p.opt, device=device, dtype=dtype)
            examples.append(x.contiguous(memory_format=_layout(device, x.ndim)))
            dynamic.append({a: torch.export.Dim(f"{name}_{a}", min=p.min[a], max=p.max[a])
                            for a in p.dynamic_axes} or None)
        if device.startswith("cuda"):
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        job.progress("torch.export")
        try:
            with _COMPILE_LOCK, torch.no_grad(), _quiet():
                program = torch.export.export(net, tuple(examples), dynamic_shapes=tuple(dynamic))
            buf = io.BytesIO()
            torch.export.save(program, buf)
        except Exception as exc:  # this model cannot be built by this backend
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedBuildError(
                f"torch.export cannot export {job.source.location}: {first}") from exc
        mode = "max-autotune-no-cudagraphs" if job.options.autotune else "default"
        job.progress(f"Inductor compile, mode {mode} (a minute or more)")
        compiled = CompiledProgram(buf.getvalue(), job.profiles, names, mode, device)
        # a private cache, so that the artifacts hold every kernel this engine needs
        with tempfile.TemporaryDirectory(prefix="reelscope-inductor-") as cache_dir, \
                _private_caches(cache_dir), _COMPILE_LOCK:
            torch._dynamo.reset()
            compiled.compile(examples)
            saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            raise EngineError("Inductor produced no cache artifacts to save")
        payload = pack(buf.getvalue(), saved[0], {"mode": mode, "input_names": list(names)})
        yield Candidate(payload, {
            "compiler": "torch.export + torch.compile (Inductor), kernels saved as "
                        "portable cache artifacts",
            "mode": mode,
            "cuda_graphs": job.options.cuda_graphs and device.startswith("cuda"),
            "channels_last": device.startswith("cuda"),
            "dtype": str(dtype),
            "input_names": list(names),
            "output_names": list(job.source.output_names),
        })

    def runner(self, payload: bytes, manifest: Manifest, device: str, threads: int) -> Runner:
        notes = manifest.options.get("engine", {})
        return TorchRunner(payload, manifest.profiles, manifest.precision, resolve_device(device),
                           cuda_graphs=bool(notes.get("cuda_graphs", False)),
                           input_names=[s.name for s in manifest.inputs],
                           output_names=manifest.outputs)


class TorchRunner(Runner, WithGraphs):
    NAME = "torch"

    def __init__(self, payload: bytes, profiles: tuple[Profile, ...], precision: str,
                 device: str, cuda_graphs: bool = True,
                 input_names: Sequence[str] = (), output_names: Sequence[str] = ()) -> None:
        super().__init__(profiles)
        self.payload = payload
        self.device = device
        self._precision = precision
        self.dtype = DTYPES[precision]
        self.input_names = tuple(input_names) or tuple(p.name for p in profiles)
        self.output_names = tuple(output_names)
        self.load_seconds = 0.0
        self.cache_hits = self.cache_misses = 0
        self._model: CompiledProgram | None = None
        top = max((p.max[0] for p in profiles), default=0)  # 0: no padding
        self.graph_cache = CudaGraphs(self._compiled, top, name=f"torch engine on {device}")
        self.graph_cache.enabled = cuda_graphs and device.startswith("cuda")

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return specs_from_profiles(self.profiles)

    def activate(self) -> None:
        """Load the program and the compiled kernels, then compile from them: Inductor
        finds every graph in its cache (``cache_hits``), nothing is compiled again."""
        start = time.perf_counter()
        program, artifacts, meta = unpack(self.payload)
        try:
            with _COMPILE_LOCK, _quiet():
                torch._dynamo.reset()
                before = _cache_counts()
                torch.compiler.load_cache_artifacts(artifacts)
                self._model = CompiledProgram(program, self.profiles, self.input_names,
                                              str(meta["mode"]), self.device)
                self._model.compile([
                    self.to_device(np.zeros(p.opt, np.float32)) for p in self.profiles
                ])
                after = _cache_counts()
            if self.cuda_graphs and all(p.dynamic_axes in ((), (0,)) for p in self.profiles):
                # inputs that differ only in their batch: every padded batch's graph now,
                # none captured under traffic (measured on an H200: a new batch size's
                # capture there took seconds, every other GPU call of the process waiting)
                self.graph_cache.prepare(lambda n: [
                    self.to_device(np.zeros((n, *p.opt[1:]), np.float32))
                    for p in self.profiles])
        except Exception as exc:
            raise EngineError(f"cannot load the torch engine: {exc}") from exc
        self.cache_hits = after[0] - before[0]
        self.cache_misses = after[1] - before[1]
        self.load_seconds = time.perf_counter() - start

    def deactivate(self) -> None:
        self.graph_cache.clear()
        self._model = None

    def _compiled(self, *inputs: torch.Tensor) -> Any:
        if self._model is None:
            raise EngineError("torch runner is not active")
        with _COMPILE_LOCK:  # a call may compile: a new shape's guards
            return self._model(*inputs)

    def run_tensors(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Inputs already on the device in the engine's dtype; outputs stay there."""
        with GATE.shared(), torch.no_grad():
            outs = self.graph_cache.run(inputs, torch.clone) if self.cuda_graphs else None
            return outs if outs is not None else as_list(self._compiled(*inputs))

    def to_device(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.dtype)
        return x.contiguous(memory_format=_layout(self.device, x.ndim))

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with GATE.shared():  # the copies in and out too
            outs = self.run_tensors([self.to_device(feed[n]) for n in self.input_names])
            values = [o.float().cpu().numpy() for o in outs]  # errors: Runner.infer translates
        names = self.output_names or tuple(f"output{i}" for i in range(len(values)))
        return dict(zip(names, values, strict=True))


class CompiledProgram:
    """An exported program compiled by Inductor; dynamic axes marked from the profiles."""

    def __init__(self, program: bytes, profiles: tuple[Profile, ...], names: Sequence[str],
                 mode: str, device: str) -> None:
        module = torch.export.load(io.BytesIO(program)).module()
        self.module = module  # its weights are the compiled graphs' inputs, not constants
        self.profiles = {p.name: p for p in profiles}
        self.names = tuple(names)
        self.device = device
        self.fn = torch.compile(module, mode=None if mode == "default" else mode,
                                fullgraph=True)

    def _mark(self, inputs: Sequence[torch.Tensor]) -> None:
        for name, x in zip(self.names, inputs, strict=True):
            p = self.profiles.get(name)
            for a in p.dynamic_axes if p else ():
                torch._dynamo.mark_dynamic(x, a)

    def compile(self, examples: Sequence[torch.Tensor]) -> None:
        """Compile for the profiles' shapes: one graph dynamic in the profiles' dynamic
        axes and, where a profile starts at 1, one for size 1 (which PyTorch specializes)."""
        self._mark(examples)
        with torch.no_grad():
            self.fn(*examples)
            ones = [x[:1] for x in examples]
            if all(p.min[0] == 1 and 0 in p.dynamic_axes for p in self.profiles.values()):
                self.fn(*ones)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        return self.fn(*inputs)


def pack(program: bytes, artifacts: bytes, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("program.pt2", program)
        z.writestr("inductor-cache.bin", artifacts)
        z.writestr("meta.json", json.dumps(meta))
    return buf.getvalue()


def unpack(payload: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            meta: dict[str, Any] = json.loads(z.read("meta.json"))
            return z.read("program.pt2"), z.read("inductor-cache.bin"), meta
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise EngineError(f"the torch engine payload is damaged: {exc}") from exc


def _cache_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]


@contextlib.contextmanager
def _private_caches(folder: str) -> Iterator[None]:
    keys = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    old = {k: os.environ.get(k) for k in keys}
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(folder, "inductor")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
