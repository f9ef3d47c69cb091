"""The ``reelscope`` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from reelscope import malloc
from reelscope.cli.engine import engine_group
from reelscope.cli.options import (
    ANALYSIS_FIELDS,
    BATCH_FIELDS,
    GroupedCommand,
    build_settings,
    settings_options,
)
from reelscope.cli.render import similar_table, summary
from reelscope.cli.service import keys_group, monitor_group, serve, worker
from reelscope.config import Settings
from reelscope.errors import InputError, ReelscopeError
from reelscope.pipeline.analyzer import STAGES, Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.store.store import Store

DEBUG_ENV = "REELSCOPE_DEBUG"
out = Console(soft_wrap=True)
err = Console(stderr=True)


@click.group()
@click.option("--db", default=None, help="database file or SQLAlchemy URL [env REELSCOPE_DB]")
@click.version_option(package_name="reelscope")
@click.pass_context
def cli(ctx: click.Context, db: str | None) -> None:
    """Understand short videos: labels, on-screen text, speech, sentiment, copyright, similar."""
    ctx.obj = {"db": db}


def _settings(ctx: click.Context, overrides: dict[str, Any]) -> Settings:
    return build_settings(ctx.obj["db"], overrides)


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if not err.is_terminal:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        yield bar


@cli.command(cls=GroupedCommand)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON, nothing else")
@click.option("--force", is_flag=True, help="analyze again even if this content is stored")
@settings_options(*ANALYSIS_FIELDS)
@click.pass_context
def analyze(ctx: click.Context, path: Path, as_json: bool, force: bool, **overrides: Any) -> None:
    """Analyze the video at PATH and store its report."""
    settings = _settings(ctx, overrides)
    store = Store(settings.database_url)
    with _progress() as bar:
        task = bar.add_task("analyzing", total=len(STAGES)) if bar else None

        def on_stage(stage: str) -> None:
            if bar is not None and task is not None:
                bar.update(task, description=f"analyzing: {stage}", advance=1)

        with Runtime(settings) as runtime:
            outcome = Analyzer(settings, store, runtime, progress=on_stage).analyze(
                path, force=force)
    if as_json:
        click.echo(outcome.report.to_json())
    else:
        summary(out, outcome.report, cached=outcome.cached)


@cli.command(cls=GroupedCommand)
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True,
              help='print only a JSON summary: {"done": [ids], "skipped": [ids], '
                   '"failed": [{"path", "error"}]}')
@settings_options(*BATCH_FIELDS)
@click.pass_context
def batch(ctx: click.Context, paths: tuple[str, ...], as_json: bool, **overrides: Any) -> None:
    """Analyze and store many videos: each PATH a file, a folder (searched for videos) or
    @list.txt (a path per line). What is stored already is skipped; the same content
    twice is analyzed once. Exit status 1 when any video failed."""
    from reelscope.pipeline.batch import ItemResult, Summary, collect, run_local

    settings = _settings(ctx, overrides)
    todo = collect(paths)
    if not todo:
        raise InputError("no videos found in " + ", ".join(paths))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("analyzing", total=len(todo), rate="")

        def on_result(result: ItemResult) -> None:
            bar.advance(task)
            elapsed = bar.tasks[task].elapsed or 0.0
            done = bar.tasks[task].completed
            if elapsed > 0:
                bar.update(task, rate=f"{done / elapsed:.2f} clips/s")
            if result.status == "failed" and not as_json:
                line = result.error  # most errors name the file first
                if not line.startswith(result.path):
                    line = f"{result.path}: {line}"
                err.print(f"failed: {line}", markup=False, highlight=False)

        if settings.ray:
            from reelscope.pipeline.ray_cluster import run_ray

            results = run_ray(todo, settings, on_result)
        else:
            results = run_local(todo, settings, on_result)
    outcome = Summary.of(results)
    if as_json:
        click.echo(outcome.to_json())
    else:
        out.print(outcome.line(), markup=False, highlight=False)
    if outcome.failed:
        ctx.exit(1)


@cli.command()
@click.argument("video_id")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def show(ctx: click.Context, video_id: str, as_json: bool) -> None:
    """Print the stored report of VIDEO_ID."""
    report = Store(_settings(ctx, {}).database_url).get(video_id)
    if as_json:
        click.echo(report.to_json())
    else:
        summary(out, report)


@cli.command()
@click.argument("video_id")
@settings_options("similar_k")
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
@click.pass_context
def similar(ctx: click.Context, video_id: str, as_json: bool, **overrides: Any) -> None:
    """List the stored videos nearest to VIDEO_ID."""
    settings = _settings(ctx, overrides)
    store = Store(settings.database_url)
    visual, text = store.embeddings(video_id)
    found = store.similar(visual, text, settings.similar_k, exclude=video_id)
    if as_json:
        click.echo(
            json.dumps([{"video_id": s.video_id, "score": round(s.score, 4)} for s in found])
        )
    else:
        similar_table(out, found)


@cli.group()
def references() -> None:
    """The copyright reference library."""


@references.command("add", cls=GroupedCommand)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--title", required=True, help="title of the copyrighted work")
@settings_options("sample_fps", "max_duration_s", "max_side_px", "max_file_mb")
@click.pass_context
def references_add(ctx: click.Context, path: Path, title: str, **overrides: Any) -> None:
    """Fingerprint PATH into the library; prints the reference id."""
    settings = _settings(ctx.find_root(), overrides)
    with Runtime(settings) as runtime:
        info = Analyzer(settings, Store(settings.database_url), runtime).add_reference(path,
                                                                                       title)
    if not info.created:
        err.print(f"already in the library as #{info.id} ({info.title})")
    click.echo(info.id)


@references.command("list")
@click.pass_context
def references_list(ctx: click.Context) -> None:
    """List the references."""
    for ref in Store(_settings(ctx.find_root(), {}).database_url).references():
        click.echo(f"{ref.id}\t{ref.duration_s:.1f} s\t{ref.title}")


def main() -> None:
    """Entry point: one clear line on stderr and a non-zero exit for every known error."""
    malloc.few_arenas()
    try:
        code = cli.main(standalone_mode=False, prog_name="reelscope")
        if isinstance(code, int) and code:  # a command's ctx.exit(code)
            sys.exit(code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ReelscopeError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2 if isinstance(exc, InputError) else 1)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)",
            err=True,
        )
        sys.exit(70)


cli.add_command(engine_group)
cli.add_command(keys_group)
cli.add_command(serve)
cli.add_command(worker)
cli.add_command(monitor_group)


if __name__ == "__main__":
    main()
