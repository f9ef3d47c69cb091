"""The accuracy gate: an engine's outputs against the fp32 reference on held-out inputs.

Class-score outputs (logits or probabilities) are judged by top-1 agreement over
all inputs and over the confident ones (fp32's top-2 probability margin at least
``confident_margin``), and by top-5 overlap. Reduced precision flips the top-1 of
inputs the fp32 model itself finds ambiguous; flips on confident inputs are
damage. Other outputs (features) are judged by cosine similarity; the maximum
absolute error is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reelscope.engine.options import GateThresholds

LOW_PRECISIONS = frozenset({"int8"})
_CLASS_HINTS = ("logit", "prob", "score", "class")


@dataclass(frozen=True)
class OutputAccuracy:
    name: str
    kind: str  # classes | features
    metrics: Mapping[str, float]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class AccuracyReport:
    precision: str
    inputs: int
    origin: str
    outputs: tuple[OutputAccuracy, ...]
    thresholds: GateThresholds

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(f"{o.name}: {f}" for o in self.outputs for f in o.failures)

    def summary(self) -> str:
        parts = []
        for o in self.outputs:
            m = o.metrics
            if o.kind == "classes":
                parts.append(
                    f"{o.name}: top-1 {m['top1_agreement']:.1%} "
                    f"(confident {m['top1_confident']:.2%} of {int(m['confident_inputs'])}), "
                    f"top-5 overlap {m['top5_overlap']:.1%}"
                )
            else:
                parts.append(
                    f"{o.name}: cosine {m['cosine_mean']:.4f} (min {m['cosine_min']:.4f}), "
                    f"max abs error {m['max_abs_error']:.3g}"
                )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "inputs": self.inputs,
            "origin": self.origin,
            "thresholds": self.thresholds.to_dict(),
            "outputs": {
                o.name: {"kind": o.kind, **{k: float(v) for k, v in o.metrics.items()},
                         "failures": list(o.failures)}
                for o in self.outputs
            },
        }


def is_class_output(name: str, class_outputs: Sequence[str] | None) -> bool:
    if class_outputs is not None:
        return name in class_outputs
    return any(h in name.lower() for h in _CLASS_HINTS)


def probabilities(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64).reshape(len(x), -1)
    if np.all(x >= 0) and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def class_metrics(ref: np.ndarray, eng: np.ndarray, margin: float) -> dict[str, float]:
    p_ref, p_eng = probabilities(ref), probabilities(eng)
    top_ref = np.argsort(-p_ref, axis=1)
    top_eng = np.argsort(-p_eng, axis=1)
    agree = top_ref[:, 0] == top_eng[:, 0]
    sorted_ref = np.take_along_axis(p_ref, top_ref[:, :2], axis=1)
    confident = (sorted_ref[:, 0] - sorted_ref[:, 1]) >= margin
    k = min(5, p_ref.shape[1])
    overlap = [len(set(a[:k]) & set(b[:k])) / k for a, b in zip(top_ref, top_eng, strict=True)]
    finite = bool(np.isfinite(eng).all())
    return {
        "top1_agreement": float(agree.mean()) if finite else 0.0,
        "top1_confident": float(agree[confident].mean()) if confident.any() and finite else 0.0,
        "confident_inputs": float(confident.sum()),
        "top5_overlap": float(np.mean(overlap)) if finite else 0.0,
        "max_abs_error": float(np.abs(ref.astype(np.float64) - eng).max()),
    }


def feature_metrics(ref: np.ndarray, eng: np.ndarray) -> dict[str, float]:
    r = ref.astype(np.float64).reshape(len(ref), -1)
    e = eng.astype(np.float64).reshape(len(eng), -1)
    if not np.isfinite(e).all():
        return {"cosine_mean": 0.0, "cosine_min": 0.0, "max_abs_error": float("inf")}
    denom = np.linalg.norm(r, axis=1) * np.linalg.norm(e, axis=1)
    cos = np.where(denom > 0, (r * e).sum(axis=1) / np.maximum(denom, 1e-30),
                   np.where(np.abs(r - e).max(axis=1) == 0, 1.0, 0.0))
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_error": float(np.abs(r - e).max()),
    }


def evaluate(reference: Mapping[str, np.ndarray], engine: Mapping[str, np.ndarray],
             precision: str, thresholds: GateThresholds, origin: str,
             class_outputs: Sequence[str] | None = None) -> AccuracyReport:
    outputs = []
    low = precision in LOW_PRECISIONS
    t = thresholds
    for name, ref in reference.items():
        eng = engine[name]
        failures: list[str] = []
        if eng.shape != ref.shape:
            failures.append(f"shape {eng.shape}, the reference gives {ref.shape}")
            outputs.append(OutputAccuracy(name, "features", {}, tuple(failures)))
            continue
        if is_class_output(name, class_outputs) and ref.ndim >= 2:
            m = class_metrics(ref, eng, t.confident_margin)
            if low:
                if m["confident_inputs"] < t.min_confident:
                    failures.append(
                        f"only {int(m['confident_inputs'])} confident held-out inputs (needs "
                        f"{t.min_confident}): give more, or more typical, calibration pictures"
                    )
                elif m["top1_confident"] < t.top1_confident_int8:
                    failures.append(f"top-1 agreement on confident inputs {m['top1_confident']:.2%}"
                                    f" < {t.top1_confident_int8:.2%}")
                if m["top1_agreement"] < t.top1_int8:
                    failures.append(
                        f"top-1 agreement {m['top1_agreement']:.1%} < {t.top1_int8:.1%}")
            elif m["top1_agreement"] < t.top1:
                failures.append(f"top-1 agreement {m['top1_agreement']:.1%} < {t.top1:.1%}")
            if m["top5_overlap"] < t.top5_overlap:
                failures.append(f"top-5 overlap {m['top5_overlap']:.1%} < {t.top5_overlap:.1%}")
            outputs.append(OutputAccuracy(name, "classes", m, tuple(failures)))
        else:
            m = feature_metrics(ref, eng)
            if m["cosine_mean"] < t.cosine:
                failures.append(f"mean cosine similarity {m['cosine_mean']:.4f} < {t.cosine}")
            outputs.append(OutputAccuracy(name, "features", m, tuple(failures)))
    n = len(next(iter(reference.values()))) if reference else 0
    return AccuracyReport(precision, n, origin, tuple(outputs), thresholds)
