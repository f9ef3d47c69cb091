"""The text encoder on the device: the embedding rows looked up on the host, the dense
network (:class:`reelscope.tasks.use_net.UseDense`) in PyTorch there."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.report import EngineUse
from reelscope.tasks.embed import MODEL_KEY


class TorchTextEncoder:
    """The same interface as :class:`reelscope.tasks.embed.TextEncoder`."""

    def __init__(self, device: torch.device, stream: Any = None) -> None:
        from reelscope.tasks.use_net import UseDense, UseEmbedding, numpy_backend

        try:
            backend = numpy_backend()
        except ImportError as exc:
            raise ModelError(f"the text encoder package is missing: {exc}") from exc
        self.embedding = UseEmbedding(backend)
        self.net = UseDense(backend).to(device).eval()
        self.device = device
        self.stream = stream
        self._lock = threading.Lock()

    @property
    def engine(self) -> EngineUse:
        return EngineUse("torch", "fp32", f"{model(MODEL_KEY).name} ({self.device})")

    def encode(self, text: str) -> np.ndarray | None:
        """One L2-normalized 512-d vector for ``text``; None when there is no text."""
        text = " ".join(text.split())
        if not text:
            return None
        emb = torch.from_numpy(self.embedding(self.embedding.ids(text)))
        with self._lock, torch.inference_mode():
            if self.stream is not None:
                with torch.cuda.stream(self.stream):
                    vec = self.net(emb.to(self.device, non_blocking=True))[0].cpu().numpy()
            else:
                vec = self.net(emb)[0].numpy()
        return vec / (np.linalg.norm(vec) + 1e-12)
