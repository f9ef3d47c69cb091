"""The loaded models of one process, created on first use and shared by analyses."""

from __future__ import annotations

from functools import cached_property

from reelscope.config import Settings
from reelscope.engine.onnxrt import OnnxRuntimeRunner
from reelscope.tasks import asr, classify, sentiment
from reelscope.tasks.asr import SpeechRecognizer
from reelscope.tasks.classify import Classifier
from reelscope.tasks.embed import TextEncoder
from reelscope.tasks.ocr import OcrReader


class Models:
    """Lazily loaded models. The CPU is split between two lanes that run at once:
    speech (Whisper) and pictures (classifier, OCR)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        total = settings.cpu_threads
        self.speech_threads = max(1, total // 2)
        self.picture_threads = max(1, total - self.speech_threads)

    @cached_property
    def classifier(self) -> Classifier:
        path = classify.export_onnx(self.settings.cache_path)
        runner = OnnxRuntimeRunner(path, threads=self.picture_threads)
        runner.__enter__()
        return Classifier(runner)

    @cached_property
    def ocr(self) -> OcrReader:
        return OcrReader(self.settings.ocr_model, threads=self.picture_threads,
                         det_max_side=self.settings.ocr_det_max_side)

    @cached_property
    def speech(self) -> SpeechRecognizer:
        model_dir = asr.prepare_model_dir(self.settings.cache_path)
        return SpeechRecognizer(
            model_dir, threads=self.speech_threads, compute_type=self.settings.asr_compute_type
        )

    @cached_property
    def text_encoder(self) -> TextEncoder:
        return TextEncoder()

    @cached_property
    def sentiment_ready(self) -> bool:
        sentiment.warm_up()
        return True
