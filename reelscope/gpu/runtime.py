"""The models of one process on one torch device (a GPU; the CPU too, for tests).

Every model is a PyTorch module on the device. The classifier and the OCR models each
have a dynamic batcher, whose thread runs on its own CUDA stream, so requests from all
the videos being analyzed at once are merged and the models run concurrently. Whisper
runs in worker processes of its own (``gpu_speech_processes``; with 0, on a stream of
the calling thread); the text encoder (one sentence per video) on a stream of its own.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cached_property

import cv2
import numpy as np
import torch

from reelscope.config import Settings
from reelscope.gpu.classify import GpuClassifier
from reelscope.gpu.device import quiet_cpu_pools, set_memory_budget, stream_context
from reelscope.gpu.embed import TorchTextEncoder
from reelscope.gpu.ocr import REC_WIDTH_BUCKET, TorchModel
from reelscope.gpu.ocr_processes import OcrProcesses
from reelscope.gpu.speech import SpeechProcesses
from reelscope.models import model
from reelscope.pipeline.batcher import BatcherOptions
from reelscope.report import EngineUse, Transcript
from reelscope.tasks import asr
from reelscope.tasks.asr_torch import TorchSpeechRecognizer
from reelscope.tasks.ocr import OcrReader, TextReader

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class GpuModels:
    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        # reduced precision on a GPU only: the CPU has no fast fp16 kernels
        self.precision = settings.gpu_precision if cuda else "fp32"
        self.dtype = DTYPES[self.precision]
        self.options = BatcherOptions(settings.gpu_max_batch, settings.gpu_max_wait_ms / 1000)
        self.context = stream_context(device)
        if cuda:
            torch.cuda.set_device(self.device)
            set_memory_budget(device, settings.gpu_memory_fraction)
        self._readers: queue.SimpleQueue[OcrReader] = queue.SimpleQueue()
        if cuda:
            quiet_cpu_pools()
        elif settings.threads:
            torch.set_num_threads(settings.threads)
        if settings.threads:  # several processes share the cores: each keeps to its share
            cv2.setNumThreads(settings.threads)

    @cached_property
    def classifier(self) -> GpuClassifier:
        return GpuClassifier(self.device, self.dtype, self.options, self.context)

    @cached_property
    def ocr_models(self) -> tuple[TorchModel, TorchModel]:
        size = self.settings.ocr_model
        det = TorchModel(model(f"ocr_det_{size}").verify()[0], self.device, self.dtype,
                         self.options, "ocr_det", self.context)
        rec = TorchModel(model(f"ocr_rec_{size}").verify()[0], self.device, self.dtype,
                         self.options, "ocr_rec", self.context, width_bucket=REC_WIDTH_BUCKET)
        return det, rec

    @cached_property
    def ocr_processes(self) -> OcrProcesses:
        return OcrProcesses(self.settings, str(self.device), self.settings.gpu_ocr_processes)

    @contextmanager
    def ocr_reader(self) -> Iterator[TextReader]:
        """A reader for one video at a time (rapidocr keeps per-call state), taken from
        a pool; every reader shares the two models and their batchers. With
        ``gpu_ocr_processes``, the worker processes (any number of threads at once)."""
        if self.settings.gpu_ocr_processes:
            yield self.ocr_processes
            return
        try:
            reader = self._readers.get_nowait()
        except queue.Empty:
            reader = OcrReader(self.settings.ocr_model, threads=1,
                               det_max_side=self.settings.ocr_det_max_side,
                               torch_models=self.ocr_models)
        try:
            yield reader
        finally:
            self._readers.put(reader)

    @cached_property
    def speech(self) -> StreamedSpeech | SpeechProcesses:
        """Whisper in worker processes (``gpu_speech_processes``), or in the calling
        thread on a CUDA stream of its own (0)."""
        model_dir = asr.prepare_model_dir(self.settings.cache_path)
        if self.settings.gpu_speech_processes:
            return SpeechProcesses(model_dir, str(self.device), self.precision,
                                   self.settings.gpu_speech_processes)
        return StreamedSpeech(TorchSpeechRecognizer(model_dir, device=str(self.device),
                                                    dtype=self.precision), self.context)

    @cached_property
    def text_encoder(self) -> TorchTextEncoder:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        return TorchTextEncoder(self.device, stream)

    def close(self) -> None:
        if "speech" in self.__dict__ and isinstance(self.speech, SpeechProcesses):
            self.speech.close()
        if "ocr_processes" in self.__dict__:
            self.ocr_processes.close()
        if "classifier" in self.__dict__:
            self.classifier.close()
        if "ocr_models" in self.__dict__:
            for m in self.ocr_models:
                m.close()


class StreamedSpeech:
    """Whisper, each transcription on a CUDA stream of its own."""

    def __init__(self, recognizer: TorchSpeechRecognizer,
                 context: Callable[[], AbstractContextManager[object]]) -> None:
        self.recognizer = recognizer
        self.context = context

    @property
    def engine(self) -> EngineUse:
        inner = self.recognizer.engine
        return EngineUse(inner.backend, inner.precision,
                         f"{inner.model} ({self.recognizer.decoder.device})")

    def transcribe(self, audio: np.ndarray) -> Transcript:
        with self.context():
            return self.recognizer.transcribe(audio)
