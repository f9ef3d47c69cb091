"""CLI flags derived from :class:`reelscope.config.Settings` fields, never declared twice,
listed in ``--help`` under their field's group."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import click

from reelscope.config import ENV_PREFIX, GROUPS, Settings

F = TypeVar("F", bound=Callable[..., Any])

ANALYSIS_FIELDS = (
    "sample_fps",
    "max_duration_s",
    "max_side_px",
    "max_file_mb",
    "threads",
    "decode_segments",
    "video_decoder",
    "ocr_model",
    "classifier_engine",
    "ocr_det_max_side",
    "ocr_change_threshold",
    "ocr_refresh_s",
    "device",
    "engine_backend",
    "max_batch",
    "max_wait_ms",
    "gpu_precision",
    "gpu_speech_processes",
    "gpu_ocr_readers",
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
RAY_FIELDS = ("ray", "ray_gpus_per_actor", "ray_cpus_per_actor", "ray_actors")
BATCH_FIELDS = (*ANALYSIS_FIELDS, "batch_in_flight", *RAY_FIELDS, "ray_max_retries")
SERVICE_FIELDS = (
    *ANALYSIS_FIELDS,
    "workers",
    "spool_dir",
    "max_jobs_per_key",
    "job_lease_s",
    "job_max_attempts",
    "webhook_max_attempts",
    "webhook_backoff_s",
    *RAY_FIELDS,
)


class SettingOption(click.Option):
    """A flag made from a Settings field; ``group`` is the field's group."""

    def __init__(self, *args: Any, group: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists the settings' flags under their groups' headings
    (in the order of ``config.GROUPS``), after the command's own options."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": []}
        sections.update({title: [] for title in GROUPS.values()})
        for param in self.get_params(ctx):
            if not isinstance(param, click.Option):
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                group = getattr(param, "group", "")
                sections[GROUPS[group] if group else "Options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def settings_options(*names: str) -> Callable[[F], F]:
    """Add one ``--flag`` per named Settings field (``--name/--no-name`` for a bool); values
    land in the command's keyword arguments, None when not given."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    hints = get_type_hints(Settings)

    def decorate(func: F) -> F:
        for name in reversed(names):
            f = fields[name]
            kind = hints[name]
            flag = "--" + name.replace("_", "-")
            extra: dict[str, Any] = {"type": kind}
            if get_origin(kind) is Literal:
                extra["type"] = click.Choice(list(get_args(kind)))
            elif kind is bool:
                flag, extra = f"{flag}/--no-{flag[2:]}", {}
            help_text = (
                f"{f.metadata['help']} [env {ENV_PREFIX}{name.upper()}; default {f.default!r}]"
            )
            func = click.option(flag, name, cls=SettingOption, group=f.metadata["group"],
                                default=None, help=help_text, **extra)(func)
        return func

    return decorate


def build_settings(db: str | None, overrides: dict[str, Any]) -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in overrides.items() if k in known}
    return Settings.from_env(db=db, **values)
