"""EfficientNet-Lite0 on the GPU: frames go up as uint8 (pinned memory), and the crop,
resize and scaling happen on the device, in batches merged across videos."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
import torch
import torch.nn.functional as F

from reelscope.gpu.device import to_device
from reelscope.models import model
from reelscope.pipeline.batcher import BatcherOptions, Context, DynamicBatcher
from reelscope.report import EngineUse
from reelscope.tasks.classify import MODEL_KEY, ClassifyOutput, classifier_module, softmax
from reelscope.video.decode import Frame

N_CLASSES = 1000
CHUNK = 8  # frames handed to the batcher at a time while a video is still decoding


def area_weights(src: int, dst: int, device: torch.device) -> torch.Tensor:
    """(dst, src) weights of OpenCV's INTER_AREA downscale along one axis: each output
    pixel averages the input pixels its footprint covers, weighted by the overlap."""
    scale = src / dst
    start = torch.arange(dst, device=device, dtype=torch.float64)[:, None] * scale
    j = torch.arange(src, device=device, dtype=torch.float64)[None, :]
    overlap = torch.minimum(start + scale, j + 1) - torch.maximum(start, j)
    return (overlap.clamp(min=0) / scale).float()


def preprocess(frames: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W, 3) uint8 on the device to the classifier's input, as
    :func:`reelscope.tasks.classify.preprocess` does it on the CPU: centre square crop,
    INTER_AREA resize to ``size`` (rounded to 8 bits, as OpenCV does), scaled to [-1, 1],
    NCHW (channels-last memory on CUDA)."""
    _, h, w, _ = frames.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = frames[:, top : top + s, left : left + s].permute(0, 3, 1, 2).float()
    if s != size:
        weights = area_weights(s, size, x.device) if s > size else None
        if weights is not None:
            x = torch.round(weights @ x @ weights.T).clamp(0, 255)
        else:  # upscaling: OpenCV's INTER_AREA is bilinear then
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x / 127.5 - 1.0).to(dtype)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class GpuClassifier:
    """The same interface as :class:`reelscope.tasks.classify.Classifier`."""

    def __init__(self, device: torch.device, dtype: torch.dtype, options: BatcherOptions,
                 context: Context | None = None) -> None:
        self.device = device
        self.dtype = dtype
        self.size = int(model(MODEL_KEY).extra["input_size"])
        net = classifier_module().to(device=device, dtype=dtype)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net = net.eval()
        self.batcher = DynamicBatcher(self._model, options, name="classify",
                                      context=context)

    @property
    def precision(self) -> str:
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")

    @property
    def engine(self) -> EngineUse:
        return self.engine_use()

    def engine_use(self, out: ClassifyOutput | None = None) -> EngineUse:
        return EngineUse("torch", self.precision, f"{model(MODEL_KEY).name} ({self.device})")

    @torch.inference_mode()
    def _model(self, frames: np.ndarray) -> np.ndarray:
        """One merged batch of uint8 frames to rows of [logits | pooled features]."""
        x = preprocess(to_device(frames, self.device), self.size, self.dtype)
        logits, features = self.net(x)
        return torch.cat([logits, features], dim=1).float().cpu().numpy()

    def start(self) -> ClassifyJob:
        return ClassifyJob(self)

    def run(self, frames: Sequence[Frame]) -> ClassifyOutput:
        job = self.start()
        for frame in frames:
            job.add(frame)
        return job.result()

    def close(self) -> None:
        self.batcher.close()


class ClassifyJob:
    """One video's frames, sent to the batcher in chunks while the video still decodes."""

    def __init__(self, classifier: GpuClassifier) -> None:
        self.classifier = classifier
        self.frames: list[tuple[int, float]] = []  # index, time: in the order added
        self._chunk: list[np.ndarray] = []
        self._futures: list[Future[np.ndarray]] = []

    def add(self, frame: Frame) -> None:
        self.frames.append((frame.index, frame.time_s))
        self._chunk.append(frame.rgb)
        if len(self._chunk) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._chunk:
            self._futures.append(self.classifier.batcher.submit(self._chunk))
            self._chunk = []

    def result(self) -> ClassifyOutput:
        self._flush()
        rows = [f.result() for f in self._futures]
        out = np.concatenate(rows) if rows else np.zeros((0, N_CLASSES + 1280), np.float32)
        order = np.argsort([index for index, _ in self.frames], kind="stable")
        out = out[order]
        return ClassifyOutput(
            times_s=np.array([self.frames[i][1] for i in order], dtype=np.float64),
            probs=softmax(out[:, :N_CLASSES]),
            features=np.ascontiguousarray(out[:, N_CLASSES:]),
        )
