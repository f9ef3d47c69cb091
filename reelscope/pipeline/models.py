"""The loaded models of one process, created on first use and shared by analyses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reelscope.config import Settings
from reelscope.engine import compiler
from reelscope.engine.base import Runner
from reelscope.engine.compiler import Engine
from reelscope.engine.options import BuildOptions, CalibrationOptions, Normalization, Profile
from reelscope.models import model
from reelscope.monitor.guard import GuardedRunner
from reelscope.monitor.health import Alerter, Monitor
from reelscope.monitor.policy import MonitorPolicy
from reelscope.tasks import asr, classify, embed, sentiment
from reelscope.tasks.asr import SpeechRecognizer
from reelscope.tasks.classify import Classifier
from reelscope.tasks.embed import TextEncoder
from reelscope.tasks.ocr import OcrReader, TextReader

if TYPE_CHECKING:
    from reelscope.gpu.classify import GpuClassifier
    from reelscope.gpu.embed import TorchTextEncoder
    from reelscope.gpu.runtime import GpuModels, StreamedSpeech
    from reelscope.gpu.speech import SpeechProcesses
    from reelscope.tasks.asr_torch import TorchSpeechRecognizer

# The text detector runs once per read frame (batch 1) and is the costliest model, and
# its fp32 reference (no graph optimization) is slower still: its shadow check runs on
# one call in 64 (a frame in about eight videos of 12 s); the recognizer's on one in 8.
SHADOW_EVERY_DET = 64
SHADOW_EVERY_REC = 8


class Models:
    """Lazily loaded models. On the CPU (ONNX Runtime engines), the cores are split
    between two lanes that run at once: speech (Whisper) and pictures (classifier, OCR).
    On a GPU (``device``), every model is a PyTorch module there (:mod:`reelscope.gpu`).

    ``torch_device`` puts the PyTorch models on that device whatever ``settings.device``
    says (``"cpu"`` runs the GPU code path on the CPU, for tests)."""

    def __init__(self, settings: Settings, torch_device: str | None = None) -> None:
        from reelscope.gpu.device import resolve

        self.settings = settings
        total = settings.cpu_threads
        self.speech_threads = max(1, total // 2)
        self.picture_threads = max(1, total - self.speech_threads)
        self.device = torch_device or resolve(settings.device)
        self.on_torch = torch_device is not None or self.device != "cpu"

    @cached_property
    def gpu(self) -> GpuModels:
        from reelscope.gpu.runtime import GpuModels

        return GpuModels(self.settings, self.device)

    def _engine(self, name: str, onnx: Path, profile: Profile,
                normalization: Normalization = "unit",
                holdout: int = 64) -> Engine:
        """An active fp32 engine for ``onnx``, built once into the cache (and rebuilt there
        when this machine or ONNX Runtime changes)."""
        cache = self.settings.cache_path
        path = cache / "engines" / f"{name}-fp32.engine"
        if not path.is_file():
            compiler.build(
                onnx, path,
                BuildOptions(precision="fp32", device="cpu", threads=self.picture_threads,
                             profiles=(profile,),
                             calibration=CalibrationOptions(normalization=normalization,
                                                            holdout=holdout)),
                cache_dir=cache,
            )
        return self._load(path)

    def _load(self, path: Path) -> Engine:
        engine = compiler.load(path, threads=self.picture_threads,
                               cache_dir=self.settings.cache_path)
        engine.__enter__()
        return engine

    @cached_property
    def classifier(self) -> Classifier | GpuClassifier:
        """The classifier's engine: ``--classifier-engine`` (say an int8 one built with
        ``reelscope engine build``), or an fp32 engine built once into the cache."""
        if self.on_torch:
            return self.gpu.classifier
        if self.settings.classifier_engine:
            engine = self._load(Path(self.settings.classifier_engine))
        else:
            engine = self._engine("classifier", classify.export_onnx(self.settings.cache_path),
                                  classify.input_profile(), normalization="symmetric")
        max_batch = engine.manifest.profiles[0].max[0] if engine.manifest.profiles else 32
        return Classifier(self._guard("classify", engine), batch_size=min(32, max_batch))

    @cached_property
    def monitor(self) -> Monitor:
        s = self.settings
        policy = MonitorPolicy(
            window=s.monitor_window, psi_max=s.monitor_psi_max, ks_max=s.monitor_ks_max,
            shadow_items=s.monitor_shadow_items, shadow_agreement=s.monitor_shadow_agreement,
            latency_budget_s=s.monitor_latency_budget_s, cooldown_s=s.monitor_cooldown_s,
            probes=s.monitor_probes,
        )
        return Monitor(policy, Alerter(s.alert_webhook))

    def _guard(self, task: str, engine: Engine, shadow_every: int = 1) -> Runner:
        """The engine's runner, guarded by its fp32 reference when monitoring is on."""
        if not self.settings.monitor:
            return engine.runner
        reference = engine.manifest.monitor.get("values")
        output = engine.manifest.monitor.get("output") or engine.manifest.outputs[0]
        fallback = compiler.fallback_runner(engine, self.picture_threads)
        health = self.monitor.task(task, None if reference is None else np.asarray(reference))
        guarded = GuardedRunner(engine.runner, fallback, health, output, shadow_every)
        guarded.__enter__()
        return guarded

    @contextmanager
    def ocr_reader(self) -> Iterator[TextReader]:
        """The reader for one video (on a GPU, one of a pool sharing the models)."""
        if self.on_torch:
            with self.gpu.ocr_reader() as reader:
                yield reader
        else:
            yield self.ocr

    @cached_property
    def ocr(self) -> OcrReader:
        """PP-OCRv6 through rapidocr, its detector and recognizer run from fp32 engines."""
        size = self.settings.ocr_model
        side = -(-self.settings.ocr_det_max_side // 32) * 32
        portrait = (side * 9 // 16 + 16) // 32 * 32  # a 16:9 frame, as the detector sees it
        det = self._engine(f"ocr-det-{size}-{side}", model(f"ocr_det_{size}").verify()[0],
                           Profile("x", (1, 3, 32, 32), (1, 3, portrait, side),
                                   (1, 3, side, side)), holdout=4)
        rec = self._engine(f"ocr-rec-{size}", model(f"ocr_rec_{size}").verify()[0],
                           Profile("x", (1, 3, 48, 16), (6, 3, 48, 320), (64, 3, 48, 4096)),
                           holdout=16)
        return OcrReader(size, threads=self.picture_threads,
                         det_max_side=self.settings.ocr_det_max_side,
                         engines=(self._guard("ocr_det", det, shadow_every=SHADOW_EVERY_DET),
                                  self._guard("ocr_rec", rec, shadow_every=SHADOW_EVERY_REC)))

    @cached_property
    def speech(
        self,
    ) -> SpeechRecognizer | TorchSpeechRecognizer | StreamedSpeech | SpeechProcesses:
        if self.on_torch:
            return self.gpu.speech
        model_dir = asr.prepare_model_dir(self.settings.cache_path)
        if self.settings.asr_backend == "torch":
            import torch

            from reelscope.tasks.asr_torch import TorchSpeechRecognizer

            cuda = torch.cuda.is_available()
            return TorchSpeechRecognizer(model_dir, device="cuda" if cuda else "cpu",
                                         dtype="fp16" if cuda else "fp32")
        return SpeechRecognizer(
            model_dir, threads=self.speech_threads, compute_type=self.settings.asr_compute_type
        )

    @cached_property
    def text_encoder(self) -> TextEncoder | TorchTextEncoder:
        """USE's dense network from an fp32 engine built once into the cache (on a GPU,
        in PyTorch there)."""
        if self.on_torch:
            return self.gpu.text_encoder
        engine = self._engine("text-encoder", embed.export_onnx(self.settings.cache_path),
                              embed.input_profile(), holdout=16)
        return TextEncoder(engine.runner)

    def load_all(self) -> None:
        """Load every model now (a service does this before its first job)."""
        for name in ("classifier", "speech", "text_encoder", "sentiment_ready"):
            getattr(self, name)
        with self.ocr_reader():
            pass

    def close(self) -> None:
        """Stop the GPU batchers' threads (nothing to do on the CPU)."""
        if "gpu" in self.__dict__:
            self.gpu.close()

    @cached_property
    def sentiment_ready(self) -> bool:
        sentiment.warm_up()
        return True
