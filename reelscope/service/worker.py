"""Workers: claim jobs from the database queue, analyze, record the outcome.

Each worker is a thread; all of a process's workers share one set of loaded
models. While a job runs, a heartbeat renews its lease (and records the
stage), so a job whose process dies is claimed again once the lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path

from reelscope.config import Settings
from reelscope.errors import InputError, ReelscopeError
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.service.metrics import Metrics
from reelscope.store.jobs import Job, JobQueue, Status
from reelscope.store.store import Store
from reelscope.store.thumbnails import Thumbnails
from reelscope.video.decode import sample_frames
from reelscope.video.media import Checked, Limits, probe
from reelscope.video.thumbnails import ThumbnailMaker, thumbnails

log = logging.getLogger("reelscope.worker")
IDLE_POLL_S = 0.5


def spool_file(settings: Settings, job_id: str) -> Path:
    """Where the upload of ``job_id`` waits: named by the job's id, never by the client."""
    return settings.spool_path / f"job-{job_id}"


def checked_file(settings: Settings, job_id: str) -> Path:
    """Where the server leaves a job's hash and probe (:class:`Checked`) for its worker."""
    return settings.spool_path / f"job-{job_id}.checked.json"


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        """Workers analyzing with ``runtime`` (default: a runtime of their own, closed by
        :meth:`stop`)."""
        self.settings = settings
        self.store = store
        self.queue = JobQueue(store)
        self.thumbs = Thumbnails(store)
        self.metrics = metrics
        self.own_runtime = runtime is None
        self.runtime = runtime or Runtime(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loading = threading.Lock()

    def start(self, count: int) -> None:
        for i in range(count):
            thread = threading.Thread(
                target=self._loop, args=(f"{self.name}/{i}",), name=f"worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if count:
            log.info("%d analysis worker(s) started (%s)", count, self.name)

    def wake(self) -> None:
        """A job was queued: stop waiting for the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        if self.own_runtime:
            self.runtime.close()

    def run_once(self, worker: str) -> bool:
        """Claim and run one job; False when the queue was empty."""
        job = self.queue.claim(worker, self.settings.job_lease_s, self.settings.job_max_attempts)
        if job is None:
            return False
        self._run(job, worker)
        return True

    def _loop(self, worker: str) -> None:
        with self._loading:  # one thread loads the shared models; the others wait for it
            try:
                self.runtime.load_all()
            except ReelscopeError as exc:
                log.error("worker %s cannot load the models: %s", worker, exc)
                return
        while not self._stop.is_set():
            try:
                if self.run_once(worker):
                    continue
            except ReelscopeError as exc:  # the database is away: wait and try again
                log.warning("worker %s: %s", worker, exc)
            self._wake.wait(IDLE_POLL_S)
            self._wake.clear()

    def _run(self, job: Job, worker: str) -> None:
        path = spool_file(self.settings, job.id)
        log.info("job %s (video %s) started by %s, attempt %d", job.id, job.video_id, worker,
                 job.attempts)
        stage = {"name": "starting"}
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(job, worker, stage, done), daemon=True
        )
        beat.start()
        try:
            status, reason = self._analyze(job, path, stage)
        finally:
            done.set()
            beat.join()
        if self.queue.finish(job.id, worker, status, reason):
            path.unlink(missing_ok=True)
            checked_file(self.settings, job.id).unlink(missing_ok=True)
            if self.metrics is not None:
                self.metrics.finished.labels(status).inc()
            log.info("job %s %s%s", job.id, status, f": {reason}" if reason else "")
        else:
            log.warning("job %s: lease lost to another worker; result left to it", job.id)

    def _checked(self, job: Job, path: Path) -> Checked | None:
        """The hash and probe the server found on upload (None: read the file again)."""
        try:
            checked = Checked.from_json(checked_file(self.settings, job.id).read_text(), path)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return checked if checked.sha256 == job.sha256 else None

    def _analyze(self, job: Job, path: Path, stage: dict[str, str]) -> tuple[Status, str]:
        if not path.exists():
            return "failed", "the uploaded file is no longer in the spool"
        maker = ThumbnailMaker()
        analyzer = Analyzer(
            self.settings, self.store, self.runtime, progress=lambda s: stage.update(name=s)
        )
        try:
            checked = self._checked(job, path)
            outcome = analyzer.analyze(path, on_frame=maker.add, filename=job.filename,
                                       checked=checked)
            if not outcome.cached:
                self.thumbs.save(job.sha256, maker.result())
            elif not self.thumbs.times(job.sha256):  # stored by the CLI: no thumbnails yet
                info = checked.info if checked else probe(path, Limits.of(self.settings))
                frames = sample_frames(info, 1.0)
                self.thumbs.save(job.sha256, thumbnails(frames))
        except InputError as exc:
            return "failed", str(exc).replace(f"{path}: ", "")
        except ReelscopeError as exc:
            log.error("job %s: %s", job.id, exc)
            return "failed", str(exc)
        except Exception as exc:  # a bug: fail this job, keep the worker alive
            log.exception("job %s: unexpected error", job.id)
            return "failed", f"internal error: {type(exc).__name__}"
        if self.metrics is not None and not outcome.cached:
            self.metrics.observe_report(outcome.report)
        return "done", ""

    def _heartbeat(
        self, job: Job, worker: str, stage: dict[str, str], done: threading.Event
    ) -> None:
        interval = max(0.2, self.settings.job_lease_s / 3)
        while not done.wait(interval):
            try:
                if not self.queue.heartbeat(job.id, worker, self.settings.job_lease_s,
                                            stage["name"]):
                    log.warning("job %s: lease lost", job.id)
                    return
            except ReelscopeError as exc:
                log.warning("job %s: heartbeat failed: %s", job.id, exc)
