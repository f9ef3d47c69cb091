"""The HTTP service: FastAPI routes over the store, the job queue and the workers.

    POST /v1/videos                 upload (multipart 'file') -> 202 {id, status}
    GET  /v1/videos                 this key's videos, newest first
    GET  /v1/videos/{id}            status, and the report when done
    GET  /v1/videos/{id}/similar    nearest of this key's videos
    GET  /v1/videos/{id}/thumbnails/{n}
    POST /v1/references             add to the copyright library ('file', 'title')
    GET  /v1/references
    GET  /healthz  GET /metrics  GET / (web page)  GET /docs (OpenAPI)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from starlette.concurrency import run_in_threadpool

from reelscope.config import Settings
from reelscope.errors import InputError, NotFoundError, ReelscopeError
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.report import Report
from reelscope.service import errors
from reelscope.service.metrics import Merged, Metrics
from reelscope.service.uploads import Upload, receive
from reelscope.service.webhooks import Deliverer
from reelscope.service.worker import WorkerPool, checked_file, spool_file
from reelscope.store.jobs import Job, JobQueue
from reelscope.store.keys import ApiKey, ApiKeys
from reelscope.store.store import ReferenceInfo, Store
from reelscope.store.thumbnails import Thumbnails
from reelscope.video.decode import check_complete
from reelscope.video.media import Checked, Limits, MediaInfo, probe

WEB = Path(__file__).parent / "web"


class RemoteWorkers(Protocol):
    """Analysis workers in other processes (say, Ray actors) whose health and metrics
    the server reports as its own."""

    workers: int

    def monitor(self) -> list[dict[str, Any]]:
        """Each worker's tasks (:meth:`Monitor.snapshot`), each naming its ``worker``."""
        ...

    def collect(self) -> Iterator[Metric]:
        """Their metrics, each sample labelled with its ``worker``."""
        ...


@dataclass
class Service:
    settings: Settings
    store: Store
    keys: ApiKeys
    jobs: JobQueue
    thumbs: Thumbnails
    metrics: Metrics
    pool: WorkerPool | None = None
    remote: RemoteWorkers | None = None
    runtime: Runtime | None = None
    deliverer: Deliverer | None = None

    @property
    def limits(self) -> Limits:
        return Limits.of(self.settings)


def create_app(settings: Settings, *, workers: int | None = None,
               remote: RemoteWorkers | None = None) -> FastAPI:
    """The app; ``workers`` analysis threads (default ``settings.workers``) and the webhook
    deliverer run while it serves. ``remote``: workers running elsewhere, whose health and
    metrics the app serves."""
    store = Store(settings.database_url)
    service = Service(
        settings, store, ApiKeys(store), JobQueue(store), Thumbnails(store), Metrics(store),
        remote=remote,
    )
    count = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.deliverer = Deliverer(settings, store)
        service.deliverer.start()
        with Runtime(settings) as runtime:
            service.runtime = runtime
            if count:
                service.pool = WorkerPool(settings, store, service.metrics, runtime)
                service.metrics.watch(runtime.monitor)
                service.pool.start(count)
            yield
            if service.pool is not None:
                service.pool.stop()
        service.deliverer.stop()
        store.close()

    app = FastAPI(
        title="reelscope",
        version="0.1.0",
        summary="Short-video understanding: labels, on-screen text, speech, sentiment, "
        "copyright, similar videos",
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install(app)
    _timing(app, service.metrics)
    _routes(app, service)
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def _timing(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def timed(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, path, str(response.status_code)).observe(
            time.perf_counter() - start
        )
        return response


def _caller(request: Request) -> ApiKey:
    """The API key of ``Authorization: Bearer KEY``; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    service: Service = request.app.state.service
    return service.keys.authenticate(secret.strip() if scheme.lower() == "bearer" else None)


Caller = Annotated[ApiKey, Depends(_caller)]


def _routes(app: FastAPI, svc: Service) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/healthz", tags=["service"])
    def healthz() -> JSONResponse:
        try:
            counts = svc.jobs.counts()
        except ReelscopeError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "database": svc.store.dialect, "jobs": counts})

    @app.get("/v1/monitor", tags=["service"])
    def monitor() -> dict[str, Any]:
        """Per-task health of this server's workers (or of each remote worker, named):
        path, incidents, drift, latency."""
        if svc.remote is not None:
            return {"workers": svc.remote.workers, "tasks": svc.remote.monitor()}
        if svc.pool is None:
            return {"workers": 0, "tasks": []}
        return {"workers": svc.settings.workers, "tasks": svc.pool.runtime.monitor.snapshot()}

    @app.get("/metrics", tags=["service"])
    def metrics() -> Response:
        own = svc.metrics.registry
        source = own if svc.remote is None else Merged(own, svc.remote)
        return Response(generate_latest(source), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/videos", status_code=202, tags=["videos"])
    async def upload_video(request: Request, key: Caller) -> JSONResponse:
        """Upload a video (multipart field ``file``); it is queued for analysis."""
        upload = await _receive(request, svc)
        job_id = uuid.uuid4().hex
        checked_path = checked_file(svc.settings, job_id)
        try:
            info = await run_in_threadpool(_validate, upload, svc.limits)
            spooled = spool_file(svc.settings, job_id)
            upload.path.rename(spooled)
            upload.path = spooled
            # the worker takes the hash and the probe from here: the file is not read again
            checked_path.write_text(Checked(upload.sha256, replace(info, path=spooled)).to_json())
            submitted = await run_in_threadpool(
                svc.jobs.submit, key.id, upload.sha256, upload.filename,
                svc.settings.max_jobs_per_key, job_id,
            )
        except BaseException:
            upload.discard()
            checked_path.unlink(missing_ok=True)
            raise
        if not submitted.created:
            upload.discard()  # this key sent the same content before: same job
            checked_path.unlink(missing_ok=True)
        elif svc.pool is not None:
            svc.pool.wake()
        job = submitted.job
        return JSONResponse(
            {**_status(job), "duplicate": not submitted.created},
            status_code=202,
            headers={"Location": f"/v1/videos/{job.video_id}"},
        )

    @app.get("/v1/videos", tags=["videos"])
    def list_videos(key: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[Any]:
        return [_status(job) for job in svc.jobs.list(key.id, limit)]

    @app.get("/v1/videos/{video_id}", tags=["videos"])
    def get_video(video_id: str, key: Caller) -> dict[str, Any]:
        """Status of an upload and, when done, its report (as ``reelscope analyze --json``)."""
        job = svc.jobs.get(key.id, video_id)
        body = _status(job)
        if job.status == "done":
            report = svc.store.get(video_id)
            visible = svc.jobs.video_ids(key.id)
            visual, text = svc.store.embeddings(video_id)
            scoped = svc.store.similar(
                visual, text, svc.settings.similar_k, exclude=video_id, among=visible
            )
            body["report"] = _with_similar(report, scoped).to_dict()
            body["thumbnails"] = [
                {"index": i, "time_s": t, "url": f"/v1/videos/{video_id}/thumbnails/{i}"}
                for i, t in enumerate(svc.thumbs.times(job.sha256))
            ]
        return body

    @app.get("/v1/videos/{video_id}/similar", tags=["videos"])
    def similar(
        video_id: str, key: Caller, k: Annotated[int, Query(ge=1, le=100)] = 5
    ) -> list[dict[str, Any]]:
        """The stored videos of this key nearest to this one, best first."""
        job = svc.jobs.get(key.id, video_id)
        if job.status != "done":
            raise NotFoundError(f"video {video_id!r} is not analyzed yet ({job.status})")
        visual, text = svc.store.embeddings(video_id)
        found = svc.store.similar(
            visual, text, k, exclude=video_id, among=svc.jobs.video_ids(key.id)
        )
        return [{"video_id": f.video_id, "score": round(f.score, 4)} for f in found]

    @app.get("/v1/videos/{video_id}/thumbnails/{index}", tags=["videos"])
    def thumbnail(video_id: str, index: int, key: Caller) -> Response:
        job = svc.jobs.get(key.id, video_id)
        return Response(svc.thumbs.jpeg(job.sha256, index), media_type="image/jpeg")

    @app.post("/v1/references", status_code=201, tags=["copyright"])
    async def add_reference(request: Request, key: Caller) -> dict[str, Any]:
        """Add a video (multipart ``file``, ``title``) to the copyright library."""
        upload = await _receive(request, svc)
        try:
            title = upload.fields.get("title", "").strip() or upload.filename or "untitled"
            probed = await run_in_threadpool(_validate, upload, svc.limits)
            checked = Checked(upload.sha256, probed)
            if svc.runtime is not None:
                analyzer = Analyzer(svc.settings, svc.store, svc.runtime)
                info = await run_in_threadpool(analyzer.add_reference, upload.path,
                                               title[:255], checked)
            else:
                info = await run_in_threadpool(_add_reference, svc, upload.path, title[:255],
                                               checked)
        finally:
            upload.discard()
        return {
            "id": info.id,
            "title": info.title,
            "duration_s": round(info.duration_s, 3),
            "created": info.created,
        }

    @app.get("/v1/references", tags=["copyright"])
    def references(key: Caller) -> list[dict[str, Any]]:
        return [
            {"id": r.id, "title": r.title, "duration_s": round(r.duration_s, 3)}
            for r in svc.store.references()
        ]


async def _receive(request: Request, svc: Service) -> Upload:
    max_bytes = int(svc.settings.max_file_mb * 1e6)
    return await receive(request, svc.settings.spool_path, max_bytes)


def _add_reference(svc: Service, path: Path, title: str, checked: Checked) -> ReferenceInfo:
    """Add a reference with a runtime of its own (a server without workers has none)."""
    with Runtime(svc.settings) as runtime:
        return Analyzer(svc.settings, svc.store, runtime).add_reference(path, title, checked)


def _validate(upload: Upload, limits: Limits) -> MediaInfo:
    """Refuse what cannot be analyzed now, with the client's filename in the message;
    the upload's probe."""
    try:
        info = probe(upload.path, limits)
        check_complete(info)
        return info
    except InputError as exc:
        name = upload.filename or "the upload"
        raise type(exc)(str(exc).replace(str(upload.path), name)) from exc


def _status(job: Job) -> dict[str, Any]:
    return {
        "id": job.video_id,
        "status": job.status,
        "stage": job.stage if job.status == "running" else "",
        "reason": job.reason,
        "filename": job.filename,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _with_similar(report: Report, similar: tuple[Any, ...]) -> Report:
    """The stored report, its similar videos narrowed to those the caller may see."""
    return replace(report, similar=similar)
