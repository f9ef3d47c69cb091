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
from typing import Any, Literal, get_args, get_origin, get_type_hints

import platformdirs

from reelscope.errors import ConfigError

ENV_PREFIX = "REELSCOPE_"
APP_NAME = "reelscope"

OcrModel = Literal["small", "tiny"]
EngineBackend = Literal["auto", "onnxruntime", "torch"]
VideoDecoder = Literal["auto", "cpu"]
GpuPrecision = Literal["fp16", "bf16", "fp32"]


GROUPS = {  # a field's group -> the heading its flag is listed under in --help
    "analysis": "Analysis",
    "limits": "Limits",
    "device": "Device and GPU",
    "monitoring": "Monitoring",
    "service": "Service",
    "cluster": "Batch and Ray cluster",
    "storage": "Storage",
}


def _setting(default: Any, group: str, text: str, *, above: float | None = None,
             at_least: float | None = None, at_most: float | None = None,
             gpu_only: bool = False) -> Any:
    """A field with its metadata: group (a key of GROUPS), help text, bounds (``above``:
    exclusive lower bound; ``at_least``/``at_most``: inclusive), and whether it applies
    on a GPU only (set on the CPU, it is refused)."""
    return field(default=default, metadata={
        "group": group, "help": text, "above": above, "at_least": at_least, "at_most": at_most,
        "gpu_only": gpu_only})


@dataclass(frozen=True)
class Settings:
    """Everything a run of reelscope can be tuned with."""

    # storage ----------------------------------------------------------------
    db: str = _setting(
        "", "storage", "database: a file path (SQLite) or a SQLAlchemy URL; default: a SQLite "
        "file in the user data directory")
    cache_dir: str = _setting(
        "", "storage", "where prepared model files are cached; default: the user cache directory")
    # analysis ---------------------------------------------------------------
    sample_fps: float = _setting(2.0, "analysis", "frames sampled per second of video", above=0)
    ocr_model: OcrModel = _setting(
        "small", "analysis", "PP-OCRv6 model size: small (default, more accurate) or tiny "
        "(faster)")
    ocr_det_max_side: int = _setting(
        960, "analysis", "frames are scaled so their longer side is at most this for text "
        "detection", above=0)
    ocr_change_threshold: float = _setting(
        20.0, "analysis", "a sampled frame is OCR'd again only when some region of it changed "
        "by more than this (mean absolute difference, 0-255) since the previous frame",
        at_least=0)
    ocr_refresh_s: float = _setting(
        2.0, "analysis", "an unchanged frame is still OCR'd again after this many seconds",
        above=0)
    classifier_engine: str = _setting(
        "", "analysis", "engine file for the image classifier (e.g. int8, from 'reelscope "
        "engine build'); default: an fp32 ONNX Runtime engine built once into the cache")
    similar_k: int = _setting(5, "analysis", "how many similar videos to list", above=0)
    copyright_min_score: float = _setting(
        0.6, "analysis", "lowest score (0-1) reported as a copyright match", at_least=0,
        at_most=1)
    # limits -----------------------------------------------------------------
    max_duration_s: float = _setting(180.0, "limits", "longest video accepted, seconds",
                                     above=0)
    max_side_px: int = _setting(4096, "limits", "largest frame side accepted, pixels", above=0)
    max_file_mb: float = _setting(512.0, "limits", "largest file accepted, MB", above=0)
    # device -----------------------------------------------------------------
    device: str = _setting(
        "auto", "device", "where the models run: cpu, cuda, cuda:N, or auto (a GPU when there "
        "is one)")
    engine_backend: EngineBackend = _setting(
        "auto", "device", "what the models' engines are built with: onnxruntime (CPU), torch "
        "(torch.export + Inductor; CPU or GPU), or auto (onnxruntime on the CPU, torch on a "
        "GPU)")
    threads: int = _setting(0, "device", "CPU threads for models and decoding; 0 = all cores",
                            at_least=0)
    decode_segments: int = _setting(
        0, "device", "a video is cut at keyframes into up to this many parts decoded at once; "
        "0 = one per core up to 8 when it is the only video being analyzed, else 1",
        at_least=0)
    video_decoder: VideoDecoder = _setting(
        "auto", "device", "auto: on a GPU, videos it can decode (8-bit SDR H.264, HEVC, VP9, "
        "AV1) are decoded by its video engines (NVDEC, through PyNvVideoCodec when "
        "installed), the others and any that fails there on the CPU; cpu: always on the CPU")
    max_batch: int = _setting(
        64, "device", "most items (frames, text lines) per model call, merged across the "
        "videos in flight", above=0)
    max_wait_ms: float = _setting(
        5.0, "device", "how long a model call waits for other videos' items to join it",
        at_least=0)
    gpu_precision: GpuPrecision = _setting(
        "fp16", "device", "precision of the models on a GPU (fp16, bf16, fp32; the engines "
        "pass the accuracy gate against fp32)", gpu_only=True)
    gpu_speech_processes: int = _setting(
        1, "device", "on a GPU: worker processes that run Whisper (0: in the analysis "
        "process, where it competes for Python's lock with the picture work)", at_least=0,
        gpu_only=True)
    gpu_ocr_readers: int = _setting(
        0, "device", "on a GPU: frames of one video OCR'd at once (their pre- and "
        "post-processing in parallel threads, their model calls batched); 0 = 4 when it is "
        "the only video being analyzed, else 1", at_least=0, gpu_only=True)
    gpu_memory_fraction: float = _setting(
        0.9, "device", "on a GPU: the share of its memory this process may use; a batch "
        "that does not fit is split and retried", above=0, at_most=1, gpu_only=True)
    # monitoring -------------------------------------------------------------
    monitor: bool = _setting(
        True, "monitoring", "guard the engines (the classifier, the OCR detector and "
        "recognizer) with their fp32 reference: errors, NaN/inf, drift or latency over budget "
        "switch to the reference until the engine probes healthy")
    monitor_window: int = _setting(
        288, "monitoring", "outputs (frames) in the confidence-drift window", above=0)
    monitor_psi_max: float = _setting(
        1.0, "monitoring", "drift alarm: population stability index above this", above=0)
    monitor_ks_max: float = _setting(
        0.4, "monitoring", "drift alarm: Kolmogorov-Smirnov statistic above this", above=0,
        at_most=1)
    monitor_shadow_items: int = _setting(
        4, "monitoring", "items of each engine call also run on the fp32 reference to compare "
        "(0 = off)", at_least=0)
    monitor_shadow_agreement: float = _setting(
        0.5, "monitoring", "shadow check alarm: top-1 agreement with the reference below this "
        "over the last 16 checked items", at_least=0, at_most=1)
    monitor_latency_budget_s: float = _setting(
        5.0, "monitoring", "one engine call slower than this is a strike; 0 = off", at_least=0)
    monitor_cooldown_s: float = _setting(
        60.0, "monitoring", "seconds on the fallback before the engine is probed", at_least=0)
    monitor_probes: int = _setting(
        3, "monitoring", "healthy shadow probes in a row that restore the engine", above=0)
    alert_webhook: str = _setting(
        "", "monitoring", "URL that receives an alert when a task falls back")
    # batch and cluster ------------------------------------------------------
    batch_in_flight: int = _setting(
        2, "cluster", "videos 'reelscope batch' analyzes at once in one runtime (on a GPU, "
        "8 keep it busier)", above=0)
    ray: str = _setting(
        "", "cluster", "where 'reelscope batch' and the service's workers run: '' on this "
        "machine; 'local': a Ray instance started for the run; 'auto' or HOST:PORT: a "
        "running Ray cluster")
    ray_gpus_per_actor: float = _setting(
        1.0, "cluster", "GPUs each analysis actor holds on a cluster with GPUs (a fraction "
        "shares one)", above=0)
    ray_cpus_per_actor: float = _setting(
        2.0, "cluster", "on a cluster without GPUs, the CPUs each analysis actor holds (one "
        "actor per this many); with GPUs the cores are shared out among the GPU actors",
        above=0)
    ray_actors: int = _setting(
        0, "cluster", "analysis actors; 0: as many as the cluster's GPUs (or CPUs) hold",
        at_least=0)
    ray_max_retries: int = _setting(
        2, "cluster", "times a video is analyzed again when its actor or node is lost",
        at_least=0)
    # service ----------------------------------------------------------------
    workers: int = _setting(
        1, "service", "analysis workers in 'reelscope serve' (0: run none)", at_least=0)
    spool_dir: str = _setting(
        "", "service", "where uploads wait for their analysis (shared by server and "
        "workers); default: 'spool' in the user data directory")
    max_jobs_per_key: int = _setting(
        20, "service", "jobs one API key may have queued or running at once", above=0)
    job_lease_s: float = _setting(
        30.0, "service", "a running job whose worker has not reported for this long is run "
        "again", above=0)
    job_max_attempts: int = _setting(
        3, "service", "a job interrupted this many times is marked failed", above=0)
    webhook_max_attempts: int = _setting(
        10, "service", "deliveries of one completion event before giving up", above=0)
    webhook_backoff_s: float = _setting(
        1.0, "service", "first retry delay of a webhook; doubled on each failure", above=0)

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
        """Every field within its bounds, every choice one of its values."""
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = hints[f.name]
            if get_origin(kind) is Literal and value not in get_args(kind):
                raise ConfigError(
                    f"setting {f.name} must be one of {get_args(kind)}, got {value!r}")
            problem = _out_of_bounds(value, f.metadata)
            if problem:
                raise ConfigError(f"setting {f.name} must be {problem}, got {value}")
        from reelscope.gpu.device import check

        try:
            check(self.device)
        except ConfigError as exc:
            raise ConfigError(f"setting {exc}") from None

    def check_device(self, device: str) -> None:
        """Refuse, in one line, a setting given a value that does not apply to ``device``
        (a GPU's setting when the models run on the CPU)."""
        if device != "cpu":
            return
        for f in dataclasses.fields(self):
            if f.metadata.get("gpu_only") and getattr(self, f.name) != f.default:
                raise ConfigError(f"setting {f.name} applies on a GPU only; the models run "
                                  "on the CPU here (device cpu)")

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


def _out_of_bounds(value: float, meta: Mapping[str, Any]) -> str:
    """What ``value`` should be, when it lies outside the bounds in ``meta``; else ""."""
    above, at_least, at_most = meta.get("above"), meta.get("at_least"), meta.get("at_most")
    low_ok = (above is None or value > above) and (at_least is None or value >= at_least)
    if low_ok and (at_most is None or value <= at_most):
        return ""
    if above == 0 and at_most is None:
        return "positive"
    if at_least == 0 and at_most is None:
        return "0 or more"
    parts = [f"> {above:g}" if above is not None else "",
             f">= {at_least:g}" if at_least is not None else "",
             f"<= {at_most:g}" if at_most is not None else ""]
    return " and ".join(part for part in parts if part)


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
