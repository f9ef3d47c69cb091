"""reelscope: understand a short video seconds after it is uploaded.

    import reelscope

    with reelscope.Runtime(device="auto") as rt:
        report = rt.analyze("clip.mp4")              # stored in the database
        print(report.transcript.text, [e.text for e in report.ocr])
        report = rt.analyze("clip.mp4", save=False)  # no database at all

The public names are imported on first use, so that ``reelscope.engine`` can be
used on a machine without the video stack (PyAV) or the database drivers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reelscope.config import Settings
    from reelscope.engine.compiler import Engine, build, load
    from reelscope.errors import ReelscopeError
    from reelscope.pipeline.analyzer import Analyzer, Outcome
    from reelscope.pipeline.runtime import Runtime
    from reelscope.report import Report
    from reelscope.store.store import Store

__all__ = [
    "Analyzer",
    "Engine",
    "Outcome",
    "ReelscopeError",
    "Report",
    "Runtime",
    "Settings",
    "Store",
    "build",
    "load",
]

_HOMES = {
    "Analyzer": "reelscope.pipeline.analyzer",
    "Outcome": "reelscope.pipeline.analyzer",
    "Engine": "reelscope.engine.compiler",
    "build": "reelscope.engine.compiler",
    "load": "reelscope.engine.compiler",
    "ReelscopeError": "reelscope.errors",
    "Report": "reelscope.report",
    "Runtime": "reelscope.pipeline.runtime",
    "Settings": "reelscope.config",
    "Store": "reelscope.store.store",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'reelscope' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
