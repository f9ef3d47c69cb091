"""reelscope: understand a short video seconds after it is uploaded."""

from reelscope.config import Settings
from reelscope.errors import ReelscopeError
from reelscope.pipeline.analyzer import Analyzer, Outcome
from reelscope.report import Report
from reelscope.store.store import Store

__all__ = ["Analyzer", "Outcome", "ReelscopeError", "Report", "Settings", "Store"]
