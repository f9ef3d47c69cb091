"""The registry of engine backends, built from guarded, lazy imports.

A backend whose library is missing is simply absent; ``pick("auto", device)``
chooses the best *tested* one present for the device and says which and why. A
backend that has never run on a real machine (``UNTESTED``) is never chosen by
``auto``; asking for it by name logs one warning. Backends are imported only when
asked for, so running an ONNX Runtime engine never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from functools import cache

from reelscope.engine.base import Builder
from reelscope.errors import ConfigError, UnsupportedBuildError

_MODULES = {
    "onnxruntime": ("reelscope.engine.backends.onnxrt", "OnnxRuntimeBuilder"),
    "torch": ("reelscope.engine.backends.inductor", "TorchBuilder"),
    "tensorrt": ("reelscope.engine.backends.tensorrt", "TensorRTBuilder"),
}
ALL_NAMES = tuple(_MODULES)
# Written and type-checked, but never run: TensorRT cannot be installed where reelscope
# is developed and tested. Listed as "untested", never picked by auto.
UNTESTED = frozenset({"tensorrt"})
# auto's order of preference per kind of device (tested backends only)
_PREFERENCE = {"cpu": ("onnxruntime", "torch"), "cuda": ("torch",)}

log = logging.getLogger(__name__)


@cache
def _load(name: str) -> type[Builder] | None:
    module_name, attr = _MODULES[name]
    if name == "tensorrt" and not _real_tensorrt():
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    builder: type[Builder] = getattr(module, attr)
    return builder


def _real_tensorrt() -> bool:
    """The type stubs alone (``tensorrt-stubs``) import as an empty namespace package."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


def describe(name: str) -> str:
    """``name`` for help texts, marked when it is untested."""
    return f"{name} (untested)" if name in UNTESTED else name


def present() -> tuple[str, ...]:
    """Names of the backends whose libraries import here."""
    return tuple(n for n in ALL_NAMES if _load(n) is not None)


def resolve_device(device: str) -> str:
    """cpu or cuda:N; ``auto`` is the first GPU when there is one."""
    if device in ("", "auto"):
        return "cuda:0" if _cuda_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device == "cpu":
        return device
    if device.startswith("cuda:") and device[5:].isdigit():
        if not _cuda_available():
            raise ConfigError(f"device {device}: no CUDA GPU is visible here")
        return device
    raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def get(name: str) -> type[Builder]:
    if name not in _MODULES:
        raise ConfigError(f"backend must be auto or one of {', '.join(ALL_NAMES)}, got {name!r}")
    builder = _load(name)
    if builder is None:
        raise UnsupportedBuildError(
            f"the {name} backend is not available here: its library does not import"
        )
    return builder


def pick(name: str, device: str) -> tuple[type[Builder], str]:
    """The builder class for ``name`` (or the best tested one for ``device`` when ``auto``),
    and why."""
    if name != "auto":
        if name in UNTESTED:
            log.warning("warning: the %s backend is untested: it has never run on a real "
                        "machine", name)
        builder = get(name)
        if not builder.available(device):
            raise UnsupportedBuildError(f"the {name} backend cannot run on {device} here")
        return builder, f"{name} (asked for)"
    kind = device.split(":")[0]
    for candidate in _PREFERENCE.get(kind, ()):
        builder_or_none = _load(candidate)
        if builder_or_none is not None and builder_or_none.available(device):
            skipped = _PREFERENCE[kind][: _PREFERENCE[kind].index(candidate)]
            why = f"{candidate} (auto: the best present for {device}"
            why += f"; {', '.join(skipped)} not installed)" if skipped else ")"
            return builder_or_none, why
    raise UnsupportedBuildError(f"no engine backend can run on {device} here")
