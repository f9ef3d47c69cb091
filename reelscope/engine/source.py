"""The model an engine is built from: an ONNX file, or a PyTorch module factory.

A factory is named ``package.module:callable``; calling it returns an
``nn.Module`` in eval mode. It may carry ``input_names`` and ``output_names``
attributes; otherwise inputs are named by the profiles and outputs ``output0``...
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelscope.digest import sha256_file
from reelscope.engine.base import TensorSpec
from reelscope.engine.manifest import SourceModel
from reelscope.engine.options import Profile
from reelscope.errors import ConfigError, EngineError, ModelError

if TYPE_CHECKING:
    import onnx
    import torch

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32",
                2: "uint8", 3: "int8", 9: "bool"}


@dataclass
class ModelSource:
    kind: str  # onnx | torch
    location: str

    @classmethod
    def resolve(cls, text: str | Path) -> ModelSource:
        """A path to an ``.onnx`` file, or ``module:callable`` returning a torch module."""
        text = str(text)
        path = Path(text)
        if path.suffix.lower() == ".onnx" or path.exists():
            if not path.is_file():
                raise ConfigError(f"no model file at {path}")
            if path.suffix.lower() != ".onnx":
                raise ConfigError(f"{path} is not an .onnx file (give ONNX or module:callable)")
            return cls("onnx", str(path.resolve()))
        if ":" in text and all(p.isidentifier() for p in text.replace(".", ":").split(":")):
            return cls("torch", text)
        raise ConfigError(f"no model {text!r}: give an .onnx file or a module:callable factory")

    # --- ONNX -----------------------------------------------------------------

    def onnx_model(self) -> onnx.ModelProto:
        """The ONNX graph, read once (names, shapes and conversion all need it)."""
        return self._onnx

    @cached_property
    def _onnx(self) -> onnx.ModelProto:
        import onnx

        if self.kind != "onnx":
            raise EngineError("not an ONNX source")
        try:
            return onnx.load(self.location)
        except Exception as exc:
            raise ModelError(f"{self.location} is not a readable ONNX model: {exc}") from exc

    def onnx_path(self, workdir: Path, profiles: tuple[Profile, ...]) -> Path:
        """The model as an ONNX file: the source itself, or the torch module exported."""
        if self.kind == "onnx":
            return Path(self.location)
        return export_onnx(self.torch_module(), workdir / "source.onnx", self.input_names(profiles),
                           self.output_names, profiles)

    # --- torch ----------------------------------------------------------------

    @cached_property
    def _factory_module(self) -> Any:
        module_name, _, attr = self.location.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import {self.location}: {exc}") from exc
        net = factory()
        net.eval()
        return net

    def torch_module(self) -> torch.nn.Module:
        if self.kind == "torch":
            module: torch.nn.Module = self._factory_module
            return module
        from reelscope.engine.onnx_torch import convert

        return convert(self.onnx_model(), self.location)

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.kind == "onnx":
            return tuple(o.name for o in self.onnx_model().graph.output)
        return tuple(getattr(self._factory_module, "output_names", ("output0",)))

    def input_names(self, profiles: tuple[Profile, ...]) -> tuple[str, ...]:
        if self.kind == "onnx":
            return tuple(s.name for s in self.input_specs(profiles))
        names = getattr(self._factory_module, "input_names", None)
        return tuple(names) if names else tuple(p.name for p in profiles) or ("input",)

    def input_specs(self, profiles: tuple[Profile, ...]) -> tuple[TensorSpec, ...]:
        if self.kind == "onnx":
            graph = self.onnx_model().graph
            initializers = {i.name for i in graph.initializer}
            specs = []
            for i in graph.input:
                if i.name in initializers:
                    continue
                t = i.type.tensor_type
                dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
                specs.append(TensorSpec(i.name, _ONNX_DTYPES.get(t.elem_type, "float32"), dims))
            return tuple(specs)
        specs = []
        for name in self.input_names(profiles):
            p = next((p for p in profiles if p.name == name), None)
            if p is None:
                raise ConfigError(
                    f"{self.location}: give a profile for input {name!r} (--profile "
                    f"{name}=MIN:OPT:MAX); a torch module does not declare its shapes"
                )
            specs.append(TensorSpec(name, "float32", p.declared_shape))
        return tuple(specs)

    @cached_property
    def sha256(self) -> str:
        if self.kind == "onnx":
            return sha256_file(Path(self.location))
        import torch

        digest = hashlib.sha256(self.location.encode())
        for key, tensor in self._factory_module.state_dict().items():
            digest.update(key.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    @property
    def name(self) -> str:
        if self.kind == "onnx":
            return Path(self.location).stem
        return self.location.rsplit(":", 1)[1]

    def record(self) -> SourceModel:
        return SourceModel(self.kind, self.location, self.sha256)


def export_onnx(net: torch.nn.Module, target: Path, input_names: tuple[str, ...],
                output_names: tuple[str, ...], profiles: tuple[Profile, ...]) -> Path:
    """Export a module to ONNX (opset 17), its profiles' dynamic axes kept dynamic."""
    import torch

    examples = []
    axes: dict[str, dict[int, str]] = {}
    for name in input_names:
        p = next((p for p in profiles if p.name == name), None)
        if p is None:
            raise ConfigError(f"give a profile for input {name!r}")
        examples.append(torch.randn(*p.opt))
        axes[name] = {a: f"{name}_d{a}" for a in p.dynamic_axes}
    if 0 in next(iter(axes.values()), {}):
        axes.update({o: {0: "batch"} for o in output_names})
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, tuple(examples), tmp, dynamo=False, opset_version=17,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes)
    os.replace(tmp, target)
    return target
