"""OCR on the GPU in worker processes of its own (``gpu_ocr_processes``).

rapidocr's pre- and post-processing and the converted models' Python run under the
process's interpreter lock: measured on the H100 machine, 70 to 100 ms of CPU per frame
read, most of it holding the lock, so one process reads only about a dozen frames a
second however many threads share the work, and a clip's frames took longer to read
than to decode. Worker
processes read frames side by side; a frame (2.8 MB for 720 x 1280) goes to one and
its text lines come back. Each worker batches only its own calls, so this suits one
video at a time (the lowest latency), not many videos in flight.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from reelscope.config import Settings
from reelscope.gpu.workers import start_pool
from reelscope.report import EngineUse
from reelscope.tasks.ocr import TextLine

_models: Any = None  # the worker process's GpuModels


def _load(settings: Settings, device: str) -> None:
    global _models
    from reelscope.gpu.runtime import GpuModels

    _models = GpuModels(replace(settings, gpu_ocr_processes=0), device)
    with _models.ocr_reader():
        pass


def _ready() -> bool:
    return _models is not None


def _read(rgb: np.ndarray) -> tuple[TextLine, ...]:
    with _models.ocr_reader() as reader:
        lines: tuple[TextLine, ...] = reader.read(rgb)
        return lines


def _engine() -> EngineUse:
    with _models.ocr_reader() as reader:
        use: EngineUse = reader.engine_use()
        return use


class OcrProcesses:
    """A text reader (:class:`reelscope.tasks.ocr.TextReader`) served by ``processes``
    worker processes that each hold the detector and recognizer; safe to call from
    several threads at once."""

    def __init__(self, settings: Settings, device: str, processes: int) -> None:
        self.processes = processes
        self.pool = start_pool(processes, _load, (settings, device), _ready, "OCR")
        own = self.pool.submit(_engine).result()
        self._engine = replace(own, model=f"{own.model[:-1]}, {processes} processes)")

    def read(self, rgb: np.ndarray) -> tuple[TextLine, ...]:
        return self.pool.submit(_read, rgb).result()

    def begin(self) -> None:
        """Nothing to count: the workers' models are not guarded."""

    def engine_use(self) -> EngineUse:
        return self._engine

    def close(self) -> None:
        self.pool.shutdown()
