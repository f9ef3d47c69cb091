"""``reelscope keys``, ``reelscope serve`` and ``reelscope worker``."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from reelscope.cli.options import (
    SERVICE_FIELDS,
    GroupedCommand,
    build_settings,
    settings_options,
)
from reelscope.store.store import Store


def _store(ctx: click.Context) -> Store:
    return Store(build_settings(ctx.find_root().obj["db"], {}).database_url)


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group("keys")
def keys_group() -> None:
    """API keys of the HTTP service."""


@keys_group.command("create")
@click.argument("name")
@click.option("--webhook", default="", help="URL that receives a completion event per video")
@click.pass_context
def keys_create(ctx: click.Context, name: str, webhook: str) -> None:
    """Create a key named NAME and print it (it is shown only this once)."""
    from reelscope.store.keys import ApiKeys

    new = ApiKeys(_store(ctx)).create(name, webhook)
    click.echo(new.secret)
    click.echo(f"key #{new.key.id} {new.key.name!r} created; store it now, it is not kept",
               err=True)


@keys_group.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List the keys (id, prefix, name, webhook, state); never the keys themselves."""
    from reelscope.store.keys import ApiKeys

    for key in ApiKeys(_store(ctx)).list():
        state = "revoked" if key.revoked else "active"
        click.echo(f"{key.id}\t{key.prefix}...\t{key.name}\t{key.webhook_url or '-'}\t{state}")


@keys_group.command("revoke")
@click.argument("key_id", type=int)
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: int) -> None:
    """Revoke key KEY_ID: its requests get 401 from now on."""
    from reelscope.store.keys import ApiKeys

    ApiKeys(_store(ctx)).update(key_id, revoke=True)


@keys_group.command("webhook")
@click.argument("key_id", type=int)
@click.argument("url")
@click.pass_context
def keys_webhook(ctx: click.Context, key_id: int, url: str) -> None:
    """Set the completion webhook of KEY_ID ('' to remove it)."""
    from reelscope.store.keys import ApiKeys

    ApiKeys(_store(ctx)).update(key_id, webhook_url=url)


@click.command("serve", cls=GroupedCommand)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@settings_options(*SERVICE_FIELDS)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, **overrides: Any) -> None:
    """Run the HTTP service (API, web page, metrics) with its analysis workers."""
    import uvicorn

    from reelscope.service.app import create_app

    _logging()
    settings = build_settings(ctx.find_root().obj["db"], overrides)
    if not settings.ray:
        app = create_app(settings)
        click.echo(f"reelscope serving on http://{host}:{port} (docs at /docs)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
        return
    from reelscope.pipeline.ray_cluster import ServiceWorkers

    cluster = ServiceWorkers(settings)  # the workers run there, none here
    try:
        app = create_app(settings, workers=0, remote=cluster)
        click.echo(f"reelscope serving on http://{host}:{port} (docs at /docs), its "
                   f"workers on the Ray cluster {settings.ray}", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    finally:
        cluster.stop()


@click.command("worker", cls=GroupedCommand)
@click.option("--metrics-port", type=int, default=0, help="serve this worker's /metrics here")
@settings_options(*SERVICE_FIELDS)
@click.pass_context
def worker(ctx: click.Context, metrics_port: int, **overrides: Any) -> None:
    """Run analysis workers without the HTTP server (they share its database and spool)."""
    from prometheus_client import start_http_server

    from reelscope.service.metrics import Metrics
    from reelscope.service.worker import WorkerPool

    _logging()
    settings = build_settings(ctx.find_root().obj["db"], overrides)
    store = Store(settings.database_url)
    metrics = Metrics(store)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    pool = WorkerPool(settings, store, metrics)
    metrics.watch(pool.runtime.monitor)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pool.start(max(1, settings.workers))
    stop.wait()
    click.echo("stopping: waiting for running jobs", err=True)
    pool.stop()


@click.group("monitor")
def monitor_group() -> None:
    """Health of the engines of a running service."""


@monitor_group.command("status")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="the service (reelscope serve) to ask")
@click.option("--json", "as_json", is_flag=True, help="print the JSON as served")
def monitor_status(url: str, as_json: bool) -> None:
    """Per task: the path serving it, incidents, drift and latency (exit 1 if degraded)."""
    import json

    import httpx

    from reelscope.errors import ServiceError

    try:
        body = httpx.get(url.rstrip("/") + "/v1/monitor", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ServiceError(f"cannot read {url}/v1/monitor: {exc}") from exc
    if as_json:
        click.echo(json.dumps(body, indent=2))
    elif not body["tasks"]:
        click.echo("no monitored task yet (no worker has loaded its models)")
    for t in [] if as_json else body["tasks"]:
        drift = "-"
        if t["drift_psi"] is not None:
            drift = f"PSI {t['drift_psi']:.2f} KS {t['drift_ks']:.2f}"
        p95 = "-" if t["latency_p95_s"] is None else f"{t['latency_p95_s'] * 1000:.0f} ms"
        click.echo(
            (f"{t['worker']} " if "worker" in t else "")
            + f"{t['task']}: {t['state']} (serving: {t['path']}), incidents {t['incidents']}, "
            f"calls {t['requests']}, errors {t['errors'] + t['invalid_outputs']}, "
            f"drift {drift}, p95 {p95}"
            + (f"; {t['reason']}" if t["reason"] else "")
        )
    if any(t["state"] != "healthy" for t in body["tasks"]):
        raise SystemExit(1)
