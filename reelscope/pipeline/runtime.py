"""One runtime on every device: everything a process loads to analyze videos, as one
object opened with ``with`` and closed by every caller.

    with Runtime(device="auto") as rt:
        report = rt.analyze("clip.mp4")            # stored in the database
        report = rt.analyze("clip.mp4", save=False)  # nothing stored

Each frame model (the classifier, the OCR detector and recognizer, the text encoder)
is served the same way on every device: an engine built once for this machine into
the cache (ONNX Runtime on the CPU, the torch backend on a GPU) -> the monitor's
guard, which falls back to the fp32 reference -> a dynamic batcher that merges the
calls of every video in flight (:mod:`reelscope.pipeline.serving`). A model the torch
backend cannot compile runs as an eager PyTorch module on the device instead, and the
report says so. Whisper runs as one PyTorch implementation with one decoding rule on
every device (:mod:`reelscope.tasks.asr`). The device is resolved once, here.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, overload

import numpy as np

from reelscope.config import Settings
from reelscope.engine import artifact, compiler
from reelscope.engine.base import Runner
from reelscope.engine.compiler import Engine, reference_runner
from reelscope.engine.options import (
    BuildOptions,
    CalibrationOptions,
    Normalization,
    Precision,
    Profile,
)
from reelscope.engine.source import ModelSource
from reelscope.errors import ConfigError, EngineError, UnsupportedBuildError
from reelscope.gpu.device import quiet_cpu_pools, resolve, set_memory_budget, stream_context
from reelscope.models import model
from reelscope.monitor.guard import GuardedRunner
from reelscope.monitor.health import Alerter, Monitor
from reelscope.monitor.policy import MonitorPolicy
from reelscope.pipeline.batcher import BatcherOptions
from reelscope.pipeline.serving import ServedModel
from reelscope.report import EngineUse, Report
from reelscope.tasks import asr, classify, embed, sentiment
from reelscope.tasks.classify import Classifier
from reelscope.tasks.embed import TextEncoder
from reelscope.tasks.ocr import REC_WIDTH_BUCKET, OcrReader

if TYPE_CHECKING:
    from reelscope.gpu.speech import SpeechProcesses
    from reelscope.store.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

# The text detector runs once per read frame (batch 1) and is the costliest model, and
# its fp32 reference (no graph optimization) is slower still: its shadow check runs on
# one call in 64 (a frame in about eight videos of 12 s); the recognizer's on one in 8.
SHADOW_EVERY_DET = 64
SHADOW_EVERY_REC = 8
DET_MAX_BATCH = 8  # frames of one size from the videos read at once, merged in one call


@dataclasses.dataclass(frozen=True)
class DevicePolicy:
    """Every choice that differs between the CPU and a GPU, made once from the settings
    and the resolved device (the tasks and the serving code hold none)."""

    device: str
    backend: str  # of the engines: onnxruntime on the CPU, torch on a GPU, unless set
    precision: Precision  # of the engines (reduced on a GPU, each through the accuracy gate)
    speech_threads: int
    picture_threads: int
    # calls a served ONNX Runtime model runs side by side on the CPU, each with the
    # picture lane's share of the cores, until every core has work; one on a GPU
    calls_side_by_side: int
    # frames per call of the text detector: on the CPU a batch costs what its frames cost
    # one by one, and its activations (large at this resolution) add up
    det_max_batch: int
    speech_processes: int  # Whisper's worker processes (0: in this process)

    # A module the torch backend could not compile runs eagerly, with no accuracy gate
    # to vouch for a reduced precision: in fp32 (the H200 figures in BENCHMARKS.md are so)
    EAGER_PRECISION: ClassVar[Precision] = "fp32"

    @classmethod
    def of(cls, settings: Settings, device: str) -> DevicePolicy:
        cuda = device.startswith("cuda")
        backend = settings.engine_backend
        if backend == "auto":
            backend = "torch" if cuda else "onnxruntime"
        speech = max(1, settings.cpu_threads // 2)
        picture = max(1, settings.cpu_threads - speech)
        return cls(
            device=device, backend=backend,
            precision=settings.gpu_precision if cuda else "fp32",
            speech_threads=speech, picture_threads=picture,
            calls_side_by_side=(max(1, settings.cpu_threads // picture)
                                if not cuda and backend == "onnxruntime" else 1),
            det_max_batch=DET_MAX_BATCH if cuda else 1,
            speech_processes=settings.gpu_speech_processes if cuda else 0)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


class _loaded(Generic[T]):
    """A model loaded on first use, once, even when several threads ask at once; models
    load side by side (the speech lane does not wait for an engine to build)."""

    def __init__(self, load: Callable[[Runtime], T]) -> None:
        self.load = load
        self.name = load.__name__
        self.__doc__ = load.__doc__

    @overload
    def __get__(self, runtime: None, owner: type) -> _loaded[T]: ...

    @overload
    def __get__(self, runtime: Runtime, owner: type) -> T: ...

    def __get__(self, runtime: Runtime | None, owner: type) -> T | _loaded[T]:
        if runtime is None:
            return self
        if self.name not in runtime.__dict__:
            with runtime._locks.setdefault(self.name, threading.Lock()):
                if self.name not in runtime.__dict__:
                    runtime.__dict__[self.name] = self.load(runtime)
        value: T = runtime.__dict__[self.name]
        return value


class Runtime:
    """The models of one process on one device (``settings.device``), loaded on first use.
    Thread-safe once loaded: the service's workers share one runtime; :meth:`load_all`
    loads everything up front."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        """``settings``, or settings read from the environment with ``overrides`` (any
        :class:`~reelscope.config.Settings` field, e.g. ``device="cpu"``)."""
        self.settings = settings if settings is not None else Settings.from_env(**overrides)
        self.device = resolve(self.settings.device)
        self.settings.check_device(self.device)
        self.policy = DevicePolicy.of(self.settings, self.device)
        self.options = BatcherOptions.of(self.settings)
        self.context = stream_context(self.device)
        self._served: list[ServedModel] = []
        self._readers: queue.SimpleQueue[OcrReader] = queue.SimpleQueue()
        self._locks: dict[str, threading.Lock] = {}
        self._closed = False
        self._setup_device()

    def _setup_device(self) -> None:
        import cv2

        if self.policy.cuda:
            import torch

            torch.cuda.set_device(torch.device(self.device))
            # fp32 is fp32: no TF32 convolutions (the eager modules and the references)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            set_memory_budget(self.device, self.settings.gpu_memory_fraction)
            quiet_cpu_pools()  # idle BLAS/OpenMP pools spin on every core (BENCHMARKS.md)
        else:  # on the CPU, torch runs Whisper in the speech lane: that lane's share of cores
            import torch

            torch.set_num_threads(self.policy.speech_threads)
        if self.settings.threads:  # several processes share the cores: each keeps to its share
            cv2.setNumThreads(self.settings.threads)

    # lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the batchers' threads and the worker processes; free the engines."""
        if self._closed:
            return
        self._closed = True
        for served in self._served:
            served.close()
        if "speech" in self.__dict__ and hasattr(self.speech, "close"):
            self.speech.close()

    def load_all(self) -> None:
        """Load every model now (a service does this before its first job)."""
        for name in ("classifier", "speech", "text_encoder", "sentiment_ready", "ocr_models"):
            getattr(self, name)

    # the Python API -------------------------------------------------------------------

    def analyze(self, path: str | Path, *, save: bool = True, force: bool = False,
                store: Store | None = None) -> Report:
        """The report of the video at ``path``. ``save``: store it (in ``store``, else the
        settings' database), or return the stored report of the same content; ``save=False``
        touches no database (no copyright or similar-video matches then)."""
        from reelscope.pipeline.analyzer import Analyzer
        from reelscope.store.store import Store

        if save and store is None:
            store = Store(self.settings.database_url)
        analyzer = Analyzer(self.settings, store if save else None, self)
        return analyzer.analyze(Path(path), force=force or not save).report

    # the models ---------------------------------------------------------------------

    @_loaded
    def monitor(self) -> Monitor:
        return Monitor(MonitorPolicy.of(self.settings), Alerter(self.settings.alert_webhook))

    @_loaded
    def classifier(self) -> Classifier:
        """EfficientNet-Lite0: ``--classifier-engine`` (say an int8 one built with
        ``reelscope engine build``), or an engine built once into the cache."""
        served = self._serve(
            "classifier", classify.export_onnx(self.settings.cache_path),
            classify.input_profile(), "classify", ("logits", "features"),
            normalization="symmetric", holdout=64,
            engine_file=self.settings.classifier_engine,
            torch_source="reelscope.tasks.classify:classifier_module")
        return Classifier(served)

    @_loaded
    def ocr_models(self) -> tuple[ServedModel, ServedModel]:
        """PP-OCRv6's detector and recognizer (rapidocr drives them)."""
        size = self.settings.ocr_model
        side = -(-self.settings.ocr_det_max_side // 32) * 32
        portrait = (side * 9 // 16 + 16) // 32 * 32  # a 16:9 frame, as the detector sees it
        det = self._serve(
            f"ocr-det-{size}-{side}", model(f"ocr_det_{size}").verify()[0],
            Profile("x", (1, 3, 32, 32), (1, 3, portrait, side), (DET_MAX_BATCH, 3, side, side)),
            "ocr_det", (), holdout=4, shadow_every=SHADOW_EVERY_DET,
            max_batch=self.policy.det_max_batch)
        rec = self._serve(
            f"ocr-rec-{size}", model(f"ocr_rec_{size}").verify()[0],
            Profile("x", (1, 3, 48, REC_WIDTH_BUCKET), (6, 3, 48, 320),
                    (64, 3, 48, 4096)),
            "ocr_rec", (), holdout=16, shadow_every=SHADOW_EVERY_REC)
        return det, rec

    @contextmanager
    def ocr_reader(self) -> Iterator[OcrReader]:
        """A reader for one video at a time (rapidocr keeps per-call state), taken from a
        pool; every reader shares the two served models and their batchers."""
        det, rec = self.ocr_models
        try:
            reader = self._readers.get_nowait()
        except queue.Empty:
            reader = OcrReader(self.settings.ocr_model, det, rec,
                               det_max_side=self.settings.ocr_det_max_side)
        try:
            yield reader
        finally:
            self._readers.put(reader)

    @_loaded
    def speech(self) -> asr.SpeechRecognizer | SpeechProcesses:
        """Whisper; on a GPU in ``gpu_speech_processes`` worker processes of its own (its
        decoding loop would otherwise wait for Python's lock behind the picture work)."""
        model_dir = asr.prepare_model_dir(self.settings.cache_path)
        if self.policy.speech_processes:
            from reelscope.gpu.speech import SpeechProcesses

            return SpeechProcesses(model_dir, self.device, self.policy.precision,
                                   self.policy.speech_processes)
        return asr.SpeechRecognizer(model_dir, self.device, self.policy.precision)

    @_loaded
    def text_encoder(self) -> TextEncoder:
        """USE's dense network from an engine (its token embeddings looked up before)."""
        served = self._serve("text-encoder", embed.export_onnx(self.settings.cache_path),
                             embed.input_profile(), "", ("vector",), holdout=16,
                             torch_source="reelscope.tasks.use_net:use_module",
                             cuda_graphs=False)  # a new graph for every text length
        return TextEncoder(served)

    @_loaded
    def sentiment_ready(self) -> bool:
        sentiment.warm_up()
        return True

    # engines ------------------------------------------------------------------------

    def _serve(self, name: str, source: Path, profile: Profile, task: str,
               outputs: tuple[str, ...], normalization: Normalization = "unit",
               holdout: int = 16, shadow_every: int = 1, engine_file: str = "",
               torch_source: str = "", cuda_graphs: bool = True,
               max_batch: int = 0) -> ServedModel:
        """The model at ``source`` (ONNX) served on this device: its engine (or an eager
        module where the torch backend cannot compile it), guarded by ``source`` in fp32
        when ``task`` is monitored, behind a batcher. ``torch_source``: the same model as
        a PyTorch module factory, which the torch backend builds from (it exports better
        than a module converted from ONNX). ``max_batch``: a lower cap on a call's items
        than the profile's and the settings'."""
        built_from = torch_source if torch_source and self.policy.backend == "torch" else source
        runner, use, reference, output = self._runner(name, built_from, profile,
                                                      normalization, holdout, engine_file,
                                                      cuda_graphs)
        if task and self.settings.monitor:
            fallback = reference_runner(ModelSource.resolve(source), (profile,),
                                        self.policy.picture_threads, optimize=True)
            health = self.monitor.task(task, reference)
            runner = GuardedRunner(runner, fallback, health, output, shadow_every)
        runner.__enter__()
        workers = self.policy.calls_side_by_side if use.backend == "onnxruntime" else 1
        # a batch never goes past what the engine's profile accepts
        cap = min(self.options.max_batch, profile.max[0], max_batch or profile.max[0])
        options = dataclasses.replace(self.options, workers=workers, max_batch=cap)
        served = ServedModel(name, runner, profile.name, outputs or (output,), use, options,
                             self.context)
        self._served.append(served)
        return served

    def _runner(self, name: str, source: Path | str, profile: Profile,
                normalization: Normalization, holdout: int, engine_file: str,
                cuda_graphs: bool = True) -> tuple[Runner, EngineUse, np.ndarray | None, str]:
        """(runner, what it is, its drift reference, the output its confidence is read
        from)."""
        label = _model_name(name)
        if engine_file:
            engine = self._load(Path(engine_file))
        else:
            path = self.settings.cache_path / "engines" / (
                f"{name}-{self.policy.backend}-{self.policy.precision}-{self.device.split(':')[0]}.engine")
            failed = path.with_suffix(".failed")
            if not path.is_file() and failed.is_file():
                return self._eager(source, profile, label, failed.read_text().strip())
            try:
                engine = self._build(path, source, profile, normalization, holdout,
                                     cuda_graphs)
            except UnsupportedBuildError as exc:
                if self.policy.backend != "torch":
                    raise
                failed.parent.mkdir(parents=True, exist_ok=True)
                failed.write_text(str(exc))  # not tried again by the next process
                return self._eager(source, profile, label, str(exc))
        manifest = engine.manifest
        use = EngineUse(manifest.backend, manifest.precision, label, device=self.device)
        values = manifest.monitor.get("values")
        output = manifest.monitor.get("output") or manifest.outputs[0]
        return engine.runner, use, None if values is None else np.asarray(values), output

    def _build(self, path: Path, source: Path | str, profile: Profile,
               normalization: Normalization, holdout: int, cuda_graphs: bool) -> Engine:
        if path.is_file() and artifact.read_manifest(path)[0].profiles != (profile,):
            path.unlink()  # built for other shapes (an older release): built again
        if not path.is_file():
            compiler.build(
                source, path,
                BuildOptions(backend=self.policy.backend, precision=self.policy.precision,
                             device=self.device, threads=self.policy.picture_threads,
                             profiles=(profile,), cuda_graphs=cuda_graphs,
                             calibration=CalibrationOptions(normalization=normalization,
                                                            holdout=holdout)),
                cache_dir=self.settings.cache_path)
        return self._load(path)

    def _load(self, path: Path) -> Engine:
        engine = compiler.load(path, device=self.device, threads=self.policy.picture_threads,
                               cache_dir=self.settings.cache_path)
        if engine.manifest.backend != self.policy.backend and not self.settings.classifier_engine:
            raise ConfigError(f"{path} is a {engine.manifest.backend} engine; this runtime "
                              f"uses {self.policy.backend}")
        return engine

    def _eager(self, source: Path | str, profile: Profile, label: str, why: str
               ) -> tuple[Runner, EngineUse, None, str]:
        """The model as an eager PyTorch module on the device (the torch backend could not
        compile it: ``why``)."""
        from reelscope.engine.eager import EagerRunner

        precision = DevicePolicy.EAGER_PRECISION
        log.warning("%s runs as an eager torch module in %s on %s: %s", label, precision,
                    self.device, why)
        src = ModelSource.resolve(source)
        try:
            module = src.torch_module()
        except EngineError as exc:
            raise EngineError(f"{label}: no engine and no torch module: {exc}") from exc
        graphs = self.device.startswith("cuda")
        if graphs:  # no shape read back from the GPU: faster, and it can be captured
            module = _folded(module, label)
        runner = EagerRunner(module, src.input_names((profile,)), src.output_names, (profile,),
                             device=self.device, precision=precision, cuda_graphs=graphs)
        use = EngineUse("torch-eager", precision, label, device=self.device)
        return runner, use, None, src.output_names[0]


def _folded(module: Any, label: str) -> Any:
    """A module converted from ONNX with its shape arithmetic folded to Python values
    (:mod:`reelscope.engine.onnx_fold`); any other module, or one it cannot fold, as is."""
    from torch import fx

    from reelscope.engine.onnx_fold import FoldError, fold_shapes

    if not isinstance(module, fx.GraphModule):
        return module
    try:
        return fold_shapes(module)
    except FoldError as exc:
        log.warning("%s: shape arithmetic left as tensors: %s", label, exc)
        return module


def _model_name(name: str) -> str:
    """The catalogue's name of an engine's model."""
    for prefix, key in (("classifier", "classifier"), ("text-encoder", "text_encoder")):
        if name.startswith(prefix):
            return model(key).name
    kind, size = name.split("-")[1:3]  # ocr-det-small-960, ocr-rec-small
    return model(f"ocr_{kind}_{size}").name
