"""CLI flags derived from :class:`reelscope.config.Settings` fields, never declared twice."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import click

from reelscope.config import ENV_PREFIX, Settings

F = TypeVar("F", bound=Callable[..., Any])

ANALYSIS_FIELDS = (
    "sample_fps",
    "max_duration_s",
    "max_side_px",
    "max_file_mb",
    "threads",
    "decode_segments",
    "ocr_model",
    "classifier_engine",
    "ocr_det_max_side",
    "ocr_change_threshold",
    "ocr_refresh_s",
    "asr_compute_type",
    "asr_backend",
    "device",
    "gpu_precision",
    "gpu_max_batch",
    "gpu_max_wait_ms",
    "gpu_speech_processes",
    "gpu_ocr_readers",
    "gpu_ocr_processes",
    "gpu_memory_fraction",
    "similar_k",
    "copyright_min_score",
    "cache_dir",
    "monitor",
    "monitor_window",
    "monitor_psi_max",
    "monitor_ks_max",
    "monitor_shadow_items",
    "monitor_shadow_agreement",
    "monitor_latency_budget_s",
    "monitor_cooldown_s",
    "monitor_probes",
    "alert_webhook",
)
SERVICE_FIELDS = (
    *ANALYSIS_FIELDS,
    "workers",
    "spool_dir",
    "max_jobs_per_key",
    "job_lease_s",
    "job_max_attempts",
    "webhook_max_attempts",
    "webhook_backoff_s",
)


def settings_options(*names: str) -> Callable[[F], F]:
    """Add one ``--flag`` per named Settings field; values land in ``settings_overrides``."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    hints = get_type_hints(Settings)

    def decorate(func: F) -> F:
        for name in reversed(names):
            f = fields[name]
            kind = hints[name]
            click_type: Any = kind
            if get_origin(kind) is Literal:
                click_type = click.Choice(list(get_args(kind)))
            help_text = (
                f"{f.metadata['help']} [env {ENV_PREFIX}{name.upper()}; default {f.default!r}]"
            )
            func = click.option(
                "--" + name.replace("_", "-"),
                name,
                type=click_type,
                default=None,
                help=help_text,
                expose_value=True,
            )(func)
        return func

    return decorate


def build_settings(db: str | None, overrides: dict[str, Any]) -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in overrides.items() if k in known}
    return Settings.from_env(db=db, **values)
