"""The durable job queue: one row per upload, in the same database as the reports.

A worker claims a job by taking a lease on it and renews the lease while it
works. A job whose lease ran out (its worker crashed or was restarted) is
claimed again, up to ``max_attempts`` times. Finishing a job and writing its
completion event happen in one transaction (the outbox), so an event is never
lost between the two.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reelscope.errors import NotFoundError, StoreError, TooManyJobsError
from reelscope.store.schema import ApiKeyRow, EventRow, JobRow
from reelscope.store.store import Store

Status = Literal["queued", "running", "done", "failed"]
STATUSES: tuple[Status, ...] = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Job:
    id: str
    key_id: int
    video_id: str
    sha256: str
    filename: str
    status: Status
    reason: str
    stage: str
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False when this key's same content is already queued, running or done


class JobQueue:
    def __init__(self, store: Store) -> None:
        self.store = store

    # producer side --------------------------------------------------------------

    def submit(
        self, key_id: int, sha256: str, filename: str, max_active: int, job_id: str
    ) -> Submitted:
        """Queue the content ``sha256`` for ``key_id`` as job ``job_id``.

        The same content again from the same key is the same job (``created``
        False), unless that job failed: then it is replaced by a new one.
        """
        try:
            with self.store.session() as s:
                _lock_key(s, key_id)
                old = s.scalar(
                    select(JobRow).where(JobRow.key_id == key_id, JobRow.sha256 == sha256)
                )
                if old is not None and old.status != "failed":
                    return Submitted(_job(old), created=False)
                active = s.scalar(
                    select(func.count())
                    .select_from(JobRow)
                    .where(JobRow.key_id == key_id, JobRow.status.in_(ACTIVE))
                )
                if (active or 0) >= max_active:
                    raise TooManyJobsError(
                        f"this key already has {active} videos queued or running "
                        f"(limit {max_active}); retry when one is done"
                    )
                if old is not None:  # the same content again after a failure: try again
                    s.delete(old)
                    s.flush()
                row = JobRow(
                    id=job_id,
                    key_id=key_id,
                    video_id=sha256[:16],
                    sha256=sha256,
                    filename=filename[:255],
                    status="queued",
                    created_at=time.time(),
                )
                s.add(row)
                s.flush()
                return Submitted(_job(row), created=True)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        # Two uploads of the same content by one key raced; the other one won.
        with self.store.session() as s:
            again = s.scalar(
                select(JobRow).where(JobRow.key_id == key_id, JobRow.sha256 == sha256)
            )
            if again is None:
                raise StoreError("the job vanished while it was being queued")
            return Submitted(_job(again), created=False)

    def get(self, key_id: int, video_id: str) -> Job:
        with self.store.session() as s:
            row = s.scalar(
                select(JobRow).where(JobRow.key_id == key_id, JobRow.video_id == video_id)
            )
            if row is None:
                raise NotFoundError(f"no video with id {video_id!r}")
            return _job(row)

    def list(self, key_id: int, limit: int = 100) -> list[Job]:
        with self.store.session() as s:
            rows = s.scalars(
                select(JobRow)
                .where(JobRow.key_id == key_id)
                .order_by(JobRow.created_at.desc())
                .limit(limit)
            )
            return [_job(r) for r in rows]

    def video_ids(self, key_id: int) -> set[str]:
        with self.store.session() as s:
            return set(
                s.scalars(
                    select(JobRow.video_id).where(JobRow.key_id == key_id, JobRow.status == "done")
                )
            )

    def counts(self) -> dict[str, int]:
        with self.store.session() as s:
            rows = s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all()
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    # worker side ----------------------------------------------------------------

    def claim(self, worker: str, lease_s: float, max_attempts: int) -> Job | None:
        """Take the oldest queued job, or one whose worker stopped reporting; None if none."""
        while True:
            now = time.time()
            with self.store.session() as s:
                query = (
                    select(JobRow)
                    .where(
                        or_(
                            JobRow.status == "queued",
                            (JobRow.status == "running") & (JobRow.lease_until < now),
                        )
                    )
                    .order_by(JobRow.created_at)
                    .limit(1)
                )
                if self.store.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                row = s.scalar(query)
                if row is None:
                    return None
                if row.attempts >= max_attempts:
                    _finish(
                        s,
                        row,
                        "failed",
                        f"the analysis was interrupted {row.attempts} times "
                        "(worker crash or restart); giving up",
                    )
                    continue
                row.status = "running"
                row.attempts += 1
                row.worker = worker[:100]
                row.lease_until = now + lease_s
                row.started_at = now
                row.stage = ""
                s.flush()
                return _job(row)

    def heartbeat(self, job_id: str, worker: str, lease_s: float, stage: str = "") -> bool:
        """Extend the lease; False when this worker no longer holds the job."""
        values: dict[str, object] = {"lease_until": time.time() + lease_s}
        if stage:
            values["stage"] = stage[:32]
        with self.store.session() as s:
            result = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.worker == worker, JobRow.status == "running")
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def finish(self, job_id: str, worker: str, status: Status, reason: str = "") -> bool:
        """Mark the job done or failed and queue its completion event, in one transaction."""
        with self.store.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != "running" or row.worker != worker:
                return False  # another worker took it over after our lease ran out
            _finish(s, row, status, reason)
            return True


def _lock_key(s: Session, key_id: int) -> None:
    """Serialize one key's submissions (PostgreSQL; SQLite's writes are serial already)."""
    s.execute(select(ApiKeyRow.id).where(ApiKeyRow.id == key_id).with_for_update())


def _finish(s: Session, row: JobRow, status: Status, reason: str) -> None:
    now = time.time()
    row.status = status
    row.reason = reason
    row.finished_at = now
    row.lease_until = 0.0
    url = s.scalar(select(ApiKeyRow.webhook_url).where(ApiKeyRow.id == row.key_id))
    if url:
        payload = {
            "event": "video.done" if status == "done" else "video.failed",
            "video_id": row.video_id,
            "status": status,
            "reason": reason,
            "filename": row.filename,
            "finished_at": now,
        }
        s.add(
            EventRow(
                job_id=row.id,
                url=url,
                payload=json.dumps(payload, ensure_ascii=False),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        key_id=row.key_id,
        video_id=row.video_id,
        sha256=row.sha256,
        filename=row.filename,
        status=row.status,  # type: ignore[arg-type]
        reason=row.reason,
        stage=row.stage,
        attempts=row.attempts,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
