"""Shape arithmetic of a converted ONNX graph as Python values.

onnx2torch keeps ONNX's shape arithmetic as tensors: ``Shape`` builds a tensor of its
input's sizes, Slice/Concat/Squeeze/... compute on it, and Reshape, Resize and Slice read
their arguments back with ``.tolist()`` (constants too: they are the graph's
initializers). Eager PyTorch pays a small copy for each; torch.export cannot trace them at
all ("could not guard on data-dependent expression"), so such a model could only run as an
eager module. :func:`fold_shapes` rewrites those nodes to compute on Python values:
constants, and sizes that torch.export traces as symbols. What is left is a graph of
tensor operations only. The torch backend folds a converted graph before it exports it;
an eager module runs as converted.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from reelscope.errors import EngineError

_VALUE_OPS = frozenset({"OnnxShape", "OnnxSlice", "OnnxConcat", "OnnxSqueezeStaticAxes",
                        "OnnxUnsqueezeStaticAxes", "OnnxCopyIdentity", "OnnxReshape",
                        "OnnxBinaryMathOperation"})
_SMALL = 64  # an initializer of at most this many values may be a shape, axes or scales


class FoldError(EngineError):
    """The graph's shape arithmetic is of a form :func:`fold_shapes` does not handle."""


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _divide(a: Any, b: Any) -> Any:
    """ONNX Div: integer division (toward zero) on integers."""
    if isinstance(a, float) or isinstance(b, float):
        return a / b
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": _divide}


class ShapeOf(torch.nn.Module):
    def __init__(self, start: int, end: int | None) -> None:
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> list[Any]:
        return list(x.shape[self.start:self.end])


class Slice(torch.nn.Module):
    """ONNX Slice with Python starts, ends, axes and steps, of a tensor or a shape value."""

    def forward(self, x: Any, starts: list[int], ends: list[int],
                axes: list[int] | None = None, steps: list[int] | None = None) -> Any:
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
        if any(step < 1 for step in steps):
            raise FoldError(f"a Slice with steps {steps} is not folded")
        if isinstance(x, list):
            (start,), (end,), (step,) = starts, ends, steps
            return x[start:end:step]
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            index[axis] = slice(start, end, step)
        return x[tuple(index)]


class Reshape(torch.nn.Module):
    """ONNX Reshape to a Python shape (0: the input's size on that axis). A one-element
    shape value reshaped to a scalar stays a Python value."""

    def forward(self, x: Any, shape: list[Any]) -> Any:
        if not isinstance(x, torch.Tensor):
            if shape or len(_as_list(x)) != 1:
                raise FoldError(f"the shape value {x} reshaped to {shape} is not folded")
            return _as_list(x)[0]
        return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])


class Resize(torch.nn.Module):
    """ONNX Resize by Python scales or sizes: the call onnx2torch makes, with the
    arguments it would have read back from tensors."""

    def __init__(self, onnx_mode: str, align_corners: bool | None) -> None:
        super().__init__()
        self.onnx_mode, self.align_corners = onnx_mode, align_corners

    def forward(self, x: torch.Tensor, roi: Any = None, scales: Any = None,
                sizes: Any = None) -> torch.Tensor:
        from onnx2torch.node_converters.resize import _onnx_mode_to_torch_mode

        if roi:
            raise FoldError("a Resize with a region of interest is not folded")
        size = list(sizes)[2:] if sizes else None
        scale = None if size else [float(s) for s in scales][2:]
        return torch.nn.functional.interpolate(
            x, size=size, scale_factor=scale, align_corners=self.align_corners,
            mode=_onnx_mode_to_torch_mode(self.onnx_mode, x.dim() - 2))


class ValueOp(torch.nn.Module):
    """Concat, Squeeze, Unsqueeze, Identity and arithmetic on shape values."""

    def __init__(self, kind: str, arithmetic: str = "") -> None:
        super().__init__()
        self.kind, self.arithmetic = kind, arithmetic

    def forward(self, *args: Any) -> Any:
        if self.kind == "concat":
            return [v for a in args for v in _as_list(a)]
        x, *rest = args
        if self.kind == "identity":
            return x
        if self.kind == "squeeze":
            if not isinstance(x, list) or len(x) != 1:
                raise FoldError(f"squeezing the shape value {x} is not folded")
            return x[0]
        if self.kind == "unsqueeze":
            return [x]
        (y,) = rest  # arithmetic, elementwise, one value broadcast
        xs, ys = _as_list(x), _as_list(y)
        fn = _ARITHMETIC[self.arithmetic]
        out = [fn(xs[i % len(xs)], ys[i % len(ys)]) for i in range(max(len(xs), len(ys)))]
        return out if isinstance(x, list) or isinstance(y, list) else out[0]


def _arithmetic(module: torch.nn.Module) -> str:
    """The ONNX operation of onnx2torch's OnnxBinaryMathOperation."""
    fn = getattr(module, "math_op_function", None)
    name = getattr(fn, "__name__", "").lower().lstrip("_")
    for op in _ARITHMETIC:
        if op in name:
            return op
    raise FoldError(f"the arithmetic {name!r} on shape values is not folded")


def fold_shapes(converted: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``converted`` with its shape arithmetic on Python values; raises
    :class:`FoldError` where that arithmetic takes a form not handled here, or a shape
    value would reach a tensor operation."""
    module = copy.deepcopy(converted)
    values: set[fx.Node] = set()  # nodes that now give Python values
    consts: dict[fx.Node, Any] = {}

    def const(node: Any) -> Any:
        """A small initializer's value as a Python list, else None."""
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            return None
        if node not in consts:
            value: Any = module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            ok = isinstance(value, torch.Tensor) and value.numel() <= _SMALL
            consts[node] = value.tolist() if ok else None
        return consts[node]

    def static(arg: Any) -> bool:
        return not isinstance(arg, fx.Node) or arg in values or const(arg) is not None

    def python_args(node: fx.Node, start: int) -> None:
        node.args = tuple(a if i < start or a in values or not isinstance(a, fx.Node)
                          else const(a) for i, a in enumerate(node.args))

    replaced: set[fx.Node] = set()
    for node in list(module.graph.nodes):
        if node.op != "call_module":
            continue
        old: Any = module.get_submodule(str(node.target))
        kind = type(old).__name__
        new: torch.nn.Module | None = None
        takes_values = node.args and all(static(a) for a in node.args)
        if kind == "OnnxShape":
            new = ShapeOf(old._start, old._end)
            values.add(node)
        elif kind in _VALUE_OPS and takes_values and any(a in values for a in node.args):
            if kind == "OnnxSlice":
                new = Slice()
            elif kind == "OnnxReshape":
                new = Reshape()
            else:
                new = ValueOp({"OnnxConcat": "concat", "OnnxSqueezeStaticAxes": "squeeze",
                               "OnnxUnsqueezeStaticAxes": "unsqueeze",
                               "OnnxCopyIdentity": "identity"}.get(kind, "arithmetic"),
                              _arithmetic(old) if kind == "OnnxBinaryMathOperation" else "")
            if kind == "OnnxSqueezeStaticAxes" and old.axes not in (None, [0]):
                raise FoldError(f"squeezing axes {old.axes} of a shape value is not folded")
            if kind == "OnnxUnsqueezeStaticAxes" and old._axes != [0]:
                raise FoldError(f"unsqueezing axes {old._axes} of a value is not folded")
            python_args(node, 0)
            values.add(node)
        elif kind in ("OnnxReshape", "OnnxSlice", "OnnxResize") and all(
                static(a) for a in node.args[1:]):
            if kind == "OnnxResize":
                new = Resize(old.onnx_mode, old.align_corners)
            else:
                new = Slice() if kind == "OnnxSlice" else Reshape()
            python_args(node, 1)
        if new is not None:
            module.add_submodule(str(node.target), new)
            replaced.add(node)
    for node in values:  # a shape value must only reach what now takes Python values
        for user in node.users:
            if user not in replaced or (user not in values and user.args[0] is node):
                raise FoldError(f"the shape value {node.name} reaches {user.name}, a tensor "
                                "operation")
    module.graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    module.recompile()
    return module
