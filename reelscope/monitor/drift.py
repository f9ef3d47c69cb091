"""Confidence of model outputs, and how far a window of them drifted from a reference.

PSI (population stability index) over the reference's deciles, and the
two-sample Kolmogorov-Smirnov statistic; both in numpy.
"""

from __future__ import annotations

import numpy as np

PSI_BINS = 10
PSI_FLOOR = 1e-4  # an empty bin counts as this share, so log() stays finite


def top1_confidence(output: np.ndarray) -> np.ndarray:
    """Per item: the top-1 probability of class scores (logits or probabilities).

    (N, C): softmax then max; (N, T, C) sequences: the mean over T of each step's max.
    """
    x = np.asarray(output, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"class scores need a batch and a class axis, got shape {x.shape}")
    probs = x
    if not (np.all(x >= 0) and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3)):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        probs = e / e.sum(axis=-1, keepdims=True)
    top = probs.max(axis=-1)
    return top.reshape(len(top), -1).mean(axis=1)


def psi(reference: np.ndarray, window: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``window`` against ``reference`` (0 = same)."""
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    edges = np.unique(edges)
    ref = np.histogram(reference, edges)[0] / len(reference)
    win = np.histogram(window, edges)[0] / len(window)
    ref, win = np.clip(ref, PSI_FLOOR, None), np.clip(win, PSI_FLOOR, None)
    return float(np.sum((win - ref) * np.log(win / ref)))


def ks(reference: np.ndarray, window: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two CDFs."""
    a, b = np.sort(reference), np.sort(window)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def top1_matches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per item: whether both outputs pick the same top-1 class."""
    x, y = np.asarray(a), np.asarray(b)
    return np.asarray(x.reshape(len(x), -1).argmax(axis=1) == y.reshape(len(y), -1).argmax(axis=1))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of items whose top-1 class is the same in both outputs (cosine for features)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.ndim == 2 and x.shape[1] > 1:
        return float(np.mean(x.argmax(axis=1) == y.argmax(axis=1)))
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    cos = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
    return float(np.mean(cos))
