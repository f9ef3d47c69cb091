"""The loaded models of one process, created on first use and shared by analyses."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from reelscope.config import Settings
from reelscope.engine import compiler
from reelscope.engine.options import BuildOptions, CalibrationOptions
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
        """The classifier's engine: ``--classifier-engine`` (say an int8 one built with
        ``reelscope engine build``), or an fp32 engine built once into the cache."""
        cache = self.settings.cache_path
        if self.settings.classifier_engine:
            path = Path(self.settings.classifier_engine)
        else:
            path = cache / "engines" / "classifier-fp32.engine"
            if not path.is_file():
                compiler.build(
                    classify.export_onnx(cache), path,
                    BuildOptions(precision="fp32", device="cpu", threads=self.picture_threads,
                                 profiles=(classify.input_profile(),),
                                 calibration=CalibrationOptions(normalization="symmetric")),
                    cache_dir=cache,
                )
        engine = compiler.load(path, threads=self.picture_threads, cache_dir=cache)
        engine.__enter__()
        max_batch = engine.manifest.profiles[0].max[0] if engine.manifest.profiles else 32
        return Classifier(engine.runner, batch_size=min(32, max_batch))

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
