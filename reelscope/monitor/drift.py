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

    (N, C): softmax then max; (N, T, C) sequences (a text recognizer): the mean over T
    of each step's max; (N, ...) maps of 4 axes or more (a text detector): the mean value.
    """
    x = np.asarray(output)
    if x.ndim < 2:
        raise ValueError(f"class scores need a batch and a class axis, got shape {x.shape}")
    if x.ndim >= 4:
        return np.asarray(x.reshape(len(x), -1).mean(axis=1, dtype=np.float64))
    first = x.reshape(-1, x.shape[-1])[0].astype(np.float64)
    if first.min() >= 0 and abs(first.sum() - 1.0) < 1e-3:  # already probabilities
        top = x.max(axis=-1).astype(np.float64)
    else:  # the largest softmax probability is 1 / sum(exp(x - max))
        top = 1.0 / np.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1, dtype=np.float64)
    return np.asarray(top.reshape(len(top), -1).mean(axis=1))


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
    """Per item: whether two outputs give the same answer. Class scores (N, C): the same
    top-1; sequences (N, T, C): the same top-1 at every step (the same text); maps:
    cosine similarity of at least 0.99."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.ndim == 2:
        return np.asarray(x.argmax(axis=1) == y.argmax(axis=1))
    if x.ndim == 3:
        return np.asarray((x.argmax(axis=2) == y.argmax(axis=2)).all(axis=1))
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    cos = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
    return np.asarray(cos >= 0.99)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of items on which two outputs give the same answer (see top1_matches)."""
    return float(np.mean(top1_matches(a, b))) if len(a) else 1.0
