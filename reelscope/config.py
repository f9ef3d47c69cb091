"""Settings: one frozen object, read once from ``REELSCOPE_*`` environment variables.

Every field documents itself through ``metadata["help"]``; the CLI derives its
flags from these fields (``reelscope.cli.options``), so nothing is declared twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import platformdirs

from reelscope.errors import ConfigError

ENV_PREFIX = "REELSCOPE_"
APP_NAME = "reelscope"

OcrModel = Literal["small", "tiny"]
AsrBackend = Literal["ctranslate2", "torch"]
GpuPrecision = Literal["fp16", "bf16", "fp32"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class Settings:
    """Everything a run of reelscope can be tuned with."""

    db: str = field(
        default="",
        metadata=_help(
            "database: a file path (SQLite) or a SQLAlchemy URL; default: a SQLite file "
            "in the user data directory"
        ),
    )
    cache_dir: str = field(
        default="",
        metadata=_help("where prepared model files are cached; default: the user cache directory"),
    )
    sample_fps: float = field(default=2.0, metadata=_help("frames sampled per second of video"))
    max_duration_s: float = field(default=180.0, metadata=_help("longest video accepted, seconds"))
    max_side_px: int = field(default=4096, metadata=_help("largest frame side accepted, pixels"))
    max_file_mb: float = field(default=512.0, metadata=_help("largest file accepted, MB"))
    threads: int = field(default=0, metadata=_help(
        "CPU threads for models and decoding; 0 = all cores"))
    decode_segments: int = field(default=0, metadata=_help(
        "a video is cut at keyframes into up to this many parts decoded at once; "
        "0 = one per core up to 8 when it is the only video being analyzed, else 1"))
    ocr_model: OcrModel = field(
        default="small",
        metadata=_help("PP-OCRv6 model size: small (default, more accurate) or tiny (faster)"),
    )
    ocr_det_max_side: int = field(default=960, metadata=_help(
        "frames are scaled so their longer side is at most this for text detection"))
    ocr_change_threshold: float = field(
        default=20.0,
        metadata=_help(
            "a sampled frame is OCR'd again only when some region of it changed by more "
            "than this (mean absolute difference, 0-255) since the previous frame"
        ),
    )
    ocr_refresh_s: float = field(
        default=2.0,
        metadata=_help("an unchanged frame is still OCR'd again after this many seconds"),
    )
    asr_compute_type: str = field(
        default="int8", metadata=_help("CTranslate2 compute type for Whisper (int8, float32)")
    )
    asr_backend: AsrBackend = field(
        default="ctranslate2",
        metadata=_help(
            "Whisper through faster-whisper (ctranslate2, CPU int8) or in PyTorch (torch: "
            "the same weights, on the GPU in fp16 when CUDA is available, else CPU fp32)"
        ),
    )
    device: str = field(
        default="auto",
        metadata=_help(
            "where the models run: cpu (ONNX Runtime engines), cuda, cuda:N (every model in "
            "PyTorch on that GPU, batched across videos), or auto (a GPU when there is one)"
        ),
    )
    gpu_precision: GpuPrecision = field(
        default="fp16", metadata=_help("precision of the models on a GPU (fp16, bf16, fp32)")
    )
    gpu_max_batch: int = field(
        default=64, metadata=_help("on a GPU: most items (frames, text lines) per model call")
    )
    gpu_max_wait_ms: float = field(
        default=5.0,
        metadata=_help("on a GPU: how long a model call waits for other videos' items"),
    )
    gpu_speech_processes: int = field(
        default=1,
        metadata=_help("on a GPU: worker processes that run Whisper (0: in the analysis "
                       "process, where it competes for Python's lock with the picture work)"),
    )
    gpu_ocr_readers: int = field(
        default=0,
        metadata=_help("on a GPU: frames of one video OCR'd at once (their pre- and "
                       "post-processing in parallel threads, their model calls batched); "
                       "0 = 4 when it is the only video being analyzed, else 1"),
    )
    gpu_ocr_processes: int = field(
        default=0,
        metadata=_help("on a GPU: worker processes that OCR frames, each with the models "
                       "and Python's lock of its own (for the lowest latency of one video "
                       "at a time); 0: in the analysis process, batched across videos"),
    )
    gpu_memory_fraction: float = field(
        default=0.9,
        metadata=_help("on a GPU: the share of its memory this process may use; a batch "
                       "that does not fit is split and retried"),
    )
    classifier_engine: str = field(
        default="",
        metadata=_help(
            "engine file for the image classifier (e.g. int8, from 'reelscope engine build'); "
            "default: an fp32 ONNX Runtime engine built once into the cache"
        ),
    )
    similar_k: int = field(default=5, metadata=_help("how many similar videos to list"))
    copyright_min_score: float = field(
        default=0.6, metadata=_help("lowest score (0-1) reported as a copyright match")
    )
    # monitoring -------------------------------------------------------------
    monitor: bool = field(
        default=True,
        metadata=_help(
            "guard the classifier engine with its fp32 reference: errors, NaN/inf, drift or "
            "latency over budget switch to the reference until the engine probes healthy"
        ),
    )
    monitor_window: int = field(
        default=288, metadata=_help("outputs (frames) in the confidence-drift window")
    )
    monitor_psi_max: float = field(
        default=1.0, metadata=_help("drift alarm: population stability index above this")
    )
    monitor_ks_max: float = field(
        default=0.4, metadata=_help("drift alarm: Kolmogorov-Smirnov statistic above this")
    )
    monitor_shadow_items: int = field(
        default=4,
        metadata=_help("items of each engine call also run on the fp32 reference to compare "
                       "(0 = off)"),
    )
    monitor_shadow_agreement: float = field(
        default=0.5,
        metadata=_help("shadow check alarm: top-1 agreement with the reference below this "
                       "over the last 16 checked items"),
    )
    monitor_latency_budget_s: float = field(
        default=5.0, metadata=_help("one engine call slower than this is a strike; 0 = off")
    )
    monitor_cooldown_s: float = field(
        default=60.0, metadata=_help("seconds on the fallback before the engine is probed")
    )
    monitor_probes: int = field(
        default=3, metadata=_help("healthy shadow probes in a row that restore the engine")
    )
    alert_webhook: str = field(
        default="", metadata=_help("URL that receives an alert when a task falls back")
    )
    # service ----------------------------------------------------------------
    workers: int = field(
        default=1, metadata=_help("analysis workers in 'reelscope serve' (0: run none)")
    )
    spool_dir: str = field(
        default="",
        metadata=_help(
            "where uploads wait for their analysis (shared by server and workers); "
            "default: 'spool' in the user data directory"
        ),
    )
    max_jobs_per_key: int = field(
        default=20, metadata=_help("jobs one API key may have queued or running at once")
    )
    job_lease_s: float = field(
        default=30.0,
        metadata=_help(
            "a running job whose worker has not reported for this long is run again"
        ),
    )
    job_max_attempts: int = field(
        default=3, metadata=_help("a job interrupted this many times is marked failed")
    )
    webhook_max_attempts: int = field(
        default=10, metadata=_help("deliveries of one completion event before giving up")
    )
    webhook_backoff_s: float = field(
        default=1.0, metadata=_help("first retry delay of a webhook; doubled on each failure")
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``REELSCOPE_<FIELD>`` variables, then apply non-None ``overrides``."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, hints[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = (
            "sample_fps", "max_duration_s", "max_side_px", "max_file_mb", "similar_k",
            "ocr_det_max_side", "ocr_refresh_s", "max_jobs_per_key", "job_lease_s",
            "job_max_attempts", "webhook_max_attempts", "webhook_backoff_s", "gpu_max_batch",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name} must be positive, got {getattr(self, name)}")
        for name in ("threads", "workers", "gpu_speech_processes", "decode_segments",
                     "gpu_ocr_readers", "gpu_ocr_processes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"setting {name} must be 0 or more, got {getattr(self, name)}")
        if self.asr_backend not in get_args(AsrBackend):
            raise ConfigError(
                f"setting asr_backend must be one of {get_args(AsrBackend)}, "
                f"got {self.asr_backend!r}"
            )
        if self.gpu_precision not in get_args(GpuPrecision):
            raise ConfigError(
                f"setting gpu_precision must be one of {get_args(GpuPrecision)}, "
                f"got {self.gpu_precision!r}"
            )
        if self.gpu_max_wait_ms < 0:
            raise ConfigError(f"setting gpu_max_wait_ms must be 0 or more, "
                              f"got {self.gpu_max_wait_ms}")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ConfigError(f"setting gpu_memory_fraction must be in (0, 1], "
                              f"got {self.gpu_memory_fraction}")
        from reelscope.gpu.device import check

        try:
            check(self.device)
        except ConfigError as exc:
            raise ConfigError(f"setting {exc}") from None
        if self.ocr_model not in get_args(OcrModel):
            raise ConfigError(
                f"setting ocr_model must be one of {get_args(OcrModel)}, got {self.ocr_model!r}"
            )

    @property
    def cpu_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL for ``db`` (a bare path means a SQLite file)."""
        if not self.db:
            path = Path(platformdirs.user_data_dir(APP_NAME)) / "reelscope.db"
        elif "://" in self.db:
            return self.db
        else:
            path = Path(self.db).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"

    @property
    def spool_path(self) -> Path:
        path = Path(self.spool_dir or Path(platformdirs.user_data_dir(APP_NAME)) / "spool")
        path = path.expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def cache_path(self) -> Path:
        path = Path(self.cache_dir or platformdirs.user_cache_dir(APP_NAME)).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path


def _parse(name: str, kind: Any, raw: str) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
        ) from exc
    return raw
