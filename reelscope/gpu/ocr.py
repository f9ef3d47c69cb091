"""PP-OCRv6's detector and recognizer in PyTorch, behind the ONNX Runtime session face
rapidocr calls, so rapidocr's own pre- and post-processing stay as they are.

Each model's calls, from every video being read, go through one dynamic batcher: the
detector's frames batch with frames of the same size, the recognizer's text lines with
lines padded to the same width bucket (rapidocr pads the lines of its own batches the
same way, with zeros after normalization).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from reelscope.engine.onnx_torch import convert
from reelscope.errors import EngineError, ModelError
from reelscope.gpu.device import to_device
from reelscope.pipeline.batcher import BatcherOptions, Context, DynamicBatcher

REC_WIDTH_BUCKET = 64  # text-line widths are padded up to a multiple of this

# onnx2torch's Slice indexes with a list; PyTorch warns about it on every call
warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)


def torch_module(onnx_path: Path) -> torch.nn.Module:
    try:
        return convert(onnx.load(str(onnx_path)), onnx_path.name)
    except EngineError as exc:
        raise ModelError(f"cannot convert {onnx_path.name} to PyTorch: {exc}") from exc


class TorchModel:
    """One OCR model on a device, called by its batcher with stacked float32 inputs."""

    def __init__(self, onnx_path: Path, device: torch.device, dtype: torch.dtype,
                 options: BatcherOptions, name: str, context: Context | None = None,
                 width_bucket: int = 0) -> None:
        self.device = device
        self.dtype = dtype
        self.name = name
        self.width_bucket = width_bucket
        self.net = torch_module(onnx_path).to(device=device, dtype=dtype)
        self._mean_std: tuple[torch.Tensor, torch.Tensor] | None = None
        self.batcher = DynamicBatcher(self._run, options, name=name,
                                      context=context)

    def normalize_uint8(self, mean: Any, std: Any) -> None:
        """uint8 inputs are scaled to [0, 1] and normalized per channel on the device,
        ``(x / 255 - mean) / std``, as rapidocr would have done on the CPU."""
        shape = (1, -1, 1, 1)
        self._mean_std = (
            torch.tensor(np.asarray(mean, np.float32), device=self.device).reshape(shape),
            torch.tensor(np.asarray(std, np.float32), device=self.device).reshape(shape))

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> np.ndarray:
        batch = to_device(x, self.device)
        if batch.dtype == torch.uint8:
            if self._mean_std is None:
                raise EngineError(f"{self.name}: uint8 input but no normalization set")
            mean, std = self._mean_std
            batch = (batch.float() * (1 / 255) - mean) / std
        out = self.net(batch.to(self.dtype))
        return out.float().cpu().numpy()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """One call's batch (rapidocr's), merged with other videos' calls by the batcher."""
        width = x.shape[-1]
        if self.width_bucket:
            padded = -(-width // self.width_bucket) * self.width_bucket
            if padded != width:
                x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, padded - width)))
        return self.batcher.run(x)

    def close(self) -> None:
        self.batcher.close()


def raw_detector_input(text_det: Any, det: TorchModel) -> None:
    """rapidocr's detector hands its resized frame to ``det`` as uint8 (1, 3, H, W)
    instead of normalizing it in float64 on the CPU (13 ms a frame on the H100 machine's
    CPU); ``det`` normalizes on the device with rapidocr's own mean and std."""
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    class RawPreProcess(DetPreProcess):
        def __call__(self, img: np.ndarray) -> np.ndarray | None:
            resized = self.resize(img)
            if resized is None:
                return None
            return np.ascontiguousarray(resized.transpose(2, 0, 1))[None]

    own = text_det.get_preprocess()  # rapidocr's, with its defaults filled in
    det.normalize_uint8(own.mean, own.std)
    text_det.get_preprocess = lambda: RawPreProcess(
        text_det.limit_side_len, text_det.limit_type, text_det.mean, text_det.std)


class TorchSession:
    """What rapidocr sees as its ONNX Runtime session: ``run`` goes to the torch model;
    everything else (input names, the character list in the metadata) to the real
    session rapidocr loaded."""

    def __init__(self, model: TorchModel, session: Any) -> None:
        self.model = model
        self.session = session

    def run(self, output_names: list[str] | None, feed: Mapping[str, np.ndarray],
            *_: object) -> list[np.ndarray]:
        (x,) = feed.values()
        return [self.model.infer(x)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)
