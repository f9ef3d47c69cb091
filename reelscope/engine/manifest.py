"""The manifest of an engine: what it was built from, for which device and versions,
with which options, and how accurate it was against the fp32 reference.

An engine is bound to the environment in its manifest, as a TensorRT plan is: a
different backend version, CPU instruction set, GPU or CUDA version makes it
unusable, and :func:`differences` names each field that differs.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from reelscope.engine.base import TensorSpec
from reelscope.engine.options import Profile

FORMAT_VERSION = 1

# CPU features that change the kernels an engine holds (vector width, int8 dot products)
_CPU_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
)


@cache
def cpu_identity() -> dict[str, str]:
    """The CPU's model name and the instruction-set flags that matter for kernels."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "arch": platform.machine(),
        "cpu": model,
        "cpu_flags": " ".join(f for f in _CPU_FLAGS if f in flags),
    }


@dataclass(frozen=True)
class SourceModel:
    """Where the engine came from: an ONNX file or a torch module factory."""

    kind: str  # onnx | torch
    location: str  # absolute path of the .onnx, or "module:callable" for torch
    sha256: str  # of the ONNX file, or of the module's state dict

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Manifest:
    name: str
    backend: str
    precision: str
    source: SourceModel
    environment: Mapping[str, str]  # backend version, device, driver... (see each backend)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    profiles: tuple[Profile, ...]
    payload_format: str
    payload_size: int
    payload_sha256: str
    built_at: str  # ISO 8601, UTC
    build_seconds: float
    options: Mapping[str, Any] = field(default_factory=dict)  # build options, calibration
    accuracy: Mapping[str, Any] = field(default_factory=dict)  # the gate's report
    # the fp32 reference's output confidences on validation inputs, for drift monitoring
    monitor: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "backend": self.backend,
            "precision": self.precision,
            "source": self.source.to_dict(),
            "environment": dict(self.environment),
            "inputs": [
                {"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in self.inputs
            ],
            "outputs": list(self.outputs),
            "profiles": [p.to_dict() for p in self.profiles],
            "payload": {
                "format": self.payload_format,
                "size": self.payload_size,
                "sha256": self.payload_sha256,
            },
            "built_at": self.built_at,
            "build_seconds": self.build_seconds,
            "options": dict(self.options),
            "accuracy": dict(self.accuracy),
            "monitor": dict(self.monitor),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        payload = d["payload"]
        return cls(
            format_version=int(d["format_version"]),
            name=str(d["name"]),
            backend=str(d["backend"]),
            precision=str(d["precision"]),
            source=SourceModel(**d["source"]),
            environment={str(k): str(v) for k, v in d["environment"].items()},
            inputs=tuple(
                TensorSpec(i["name"], i["dtype"], tuple(i["shape"])) for i in d["inputs"]
            ),
            outputs=tuple(d["outputs"]),
            profiles=tuple(Profile.from_dict(p) for p in d["profiles"]),
            payload_format=str(payload["format"]),
            payload_size=int(payload["size"]),
            payload_sha256=str(payload["sha256"]),
            built_at=str(d["built_at"]),
            build_seconds=float(d["build_seconds"]),
            options=dict(d.get("options", {})),
            accuracy=dict(d.get("accuracy", {})),
            monitor=dict(d.get("monitor", {})),
        )


def differences(built: Mapping[str, str], here: Mapping[str, str]) -> tuple[str, ...]:
    """Each environment field whose value differs, as ``field: built for X, here Y``."""
    return tuple(
        f"{key}: built for {built.get(key, '-')!r}, here {here.get(key, '-')!r}"
        for key in sorted(set(built) | set(here))
        if built.get(key) != here.get(key)
    )
