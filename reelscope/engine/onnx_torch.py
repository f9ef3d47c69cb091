"""ONNX graphs into PyTorch modules (onnx2torch), with the fixes real models need."""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import TYPE_CHECKING

from reelscope.errors import EngineError

# onnx2torch's Slice indexes with a list; PyTorch warns about it on every call
warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)

if TYPE_CHECKING:
    import onnx
    import torch


def fix_same_upper(graph: onnx.ModelProto) -> onnx.ModelProto:
    """onnx2torch cannot convert ``auto_pad=SAME_UPPER``. For stride 1 it is explicit
    padding, the odd pixel at the end (PP-OCRv6 has three such 2x2 nodes: [0, 0, 1, 1])."""
    import onnx

    for node in graph.graph.node:
        for attr in list(node.attribute):
            if attr.name != "auto_pad" or attr.s != b"SAME_UPPER":
                continue
            kernel = next(a.ints for a in node.attribute if a.name == "kernel_shape")
            strides = next((a.ints for a in node.attribute if a.name == "strides"), [1, 1])
            dilations = next((a.ints for a in node.attribute if a.name == "dilations"), [1, 1])
            if any(s != 1 for s in strides) or any(d != 1 for d in dilations):
                raise EngineError(f"{node.name}: SAME_UPPER padding with strides {list(strides)}"
                                  f" and dilations {list(dilations)} is not supported")
            node.attribute.remove(attr)
            starts = [(k - 1) // 2 for k in kernel]
            ends = [k - 1 - (k - 1) // 2 for k in kernel]
            node.attribute.append(onnx.helper.make_attribute("pads", starts + ends))
    return graph


def _import_onnx2torch() -> types.ModuleType:
    """onnx2torch imports torchvision (for its NonMaxSuppression converter) at import time.
    Where the installed torchvision does not match torch (PyPI's torchvision beside a CPU
    build of torch fails to load its operators), an empty stand-in lets every other
    converter load; a graph with NonMaxSuppression then fails to convert."""
    try:
        return importlib.import_module("onnx2torch")
    except ImportError:
        raise
    except Exception as exc:  # torchvision's own import error (RuntimeError)
        if "torchvision" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.",
                                                                               "onnx2torch"))]:
        del sys.modules[name]
    stand_in = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.__dict__["__getattr__"] = _missing_op
    stand_in.__dict__["ops"] = ops
    sys.modules["torchvision"] = stand_in
    sys.modules["torchvision.ops"] = ops
    return importlib.import_module("onnx2torch")


def _missing_op(name: str) -> object:
    if name.startswith("__"):  # a module attribute such as __file__ (inspect reads them)
        raise AttributeError(name)

    def unavailable(*_: object, **__: object) -> None:
        raise EngineError(f"torchvision.ops.{name} is unavailable: the installed torchvision "
                          "does not load beside this torch")

    return unavailable


def convert(graph: onnx.ModelProto, location: str) -> torch.nn.Module:
    try:
        onnx2torch = _import_onnx2torch()
    except ImportError as exc:
        raise EngineError(
            "converting ONNX to PyTorch needs onnx2torch (pip install onnx2torch)") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module: torch.nn.Module = onnx2torch.convert(fix_same_upper(graph))
    except Exception as exc:
        raise EngineError(f"onnx2torch cannot convert {location}: {exc}") from exc
    return module.eval()
