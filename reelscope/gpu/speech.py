"""Whisper on the GPU in worker processes of its own.

Greedy decoding launches many small kernels per token from Python. In the analysis
process it shares the interpreter lock with the picture work and waits for it at each
launch (BENCHMARKS.md measures how much). A worker process has its own lock; the audio
goes there and the transcript comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reelscope.gpu.workers import start_pool
from reelscope.models import model
from reelscope.report import EngineUse, Transcript

_recognizer: Any = None  # the worker process's model


def _load(model_dir: str, device: str, precision: str) -> None:
    global _recognizer
    import torch

    from reelscope.tasks.asr import SpeechRecognizer

    if device.startswith("cuda"):
        from reelscope.gpu.device import quiet_cpu_pools

        torch.cuda.set_device(torch.device(device))
        quiet_cpu_pools()
    _recognizer = SpeechRecognizer(Path(model_dir), device, precision)


def _transcribe(audio: np.ndarray) -> Transcript:
    result: Transcript = _recognizer.transcribe(audio)
    return result


def _ready() -> bool:
    return _recognizer is not None


class SpeechProcesses:
    """The interface of :class:`reelscope.tasks.asr.SpeechRecognizer`, served by
    ``processes`` worker processes that each hold the model."""

    def __init__(self, model_dir: Path, device: str, precision: str, processes: int) -> None:
        self.device = device
        self.precision = precision
        self.processes = processes
        self.pool = start_pool(processes, _load, (str(model_dir), device, precision), _ready,
                               "speech")

    @property
    def engine(self) -> EngineUse:
        return EngineUse("torch-eager", self.precision,
                         f"{model('asr').name} ({self.processes} processes of its own)",
                         device=self.device)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        return self.pool.submit(_transcribe, audio).result()

    def close(self) -> None:
        self.pool.shutdown()
