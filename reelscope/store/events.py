"""The webhook outbox: completion events waiting for delivery, retried with backoff."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select

from reelscope.store.schema import EventRow
from reelscope.store.store import Store

IN_FLIGHT_S = 60.0  # a claimed event is not handed to another deliverer for this long
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class Event:
    id: int
    job_id: str
    url: str
    payload: str
    attempts: int


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    def claim_due(self, limit: int = 20) -> list[Event]:
        """Pending events whose time has come, each reserved for IN_FLIGHT_S."""
        now = time.time()
        with self.store.session() as s:
            query = (
                select(EventRow)
                .where(EventRow.status == "pending", EventRow.next_attempt_at <= now)
                .order_by(EventRow.next_attempt_at)
                .limit(limit)
            )
            if self.store.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(s.scalars(query))
            for row in rows:
                row.next_attempt_at = now + IN_FLIGHT_S
            return [Event(r.id, r.job_id, r.url, r.payload, r.attempts) for r in rows]

    def delivered(self, event_id: int) -> None:
        with self.store.session() as s:
            row = s.get(EventRow, event_id)
            if row is not None:
                row.status = "delivered"
                row.attempts += 1
                row.delivered_at = time.time()
                row.last_error = ""

    def failed_attempt(
        self, event_id: int, error: str, backoff_s: float, max_attempts: int
    ) -> bool:
        """Record a failed delivery; True when the event will be tried again."""
        with self.store.session() as s:
            row = s.get(EventRow, event_id)
            if row is None:
                return False
            row.attempts += 1
            row.last_error = error[:1000]
            if row.attempts >= max_attempts:
                row.status = "failed"
                return False
            delay = min(MAX_BACKOFF_S, backoff_s * 2 ** (row.attempts - 1))
            row.next_attempt_at = time.time() + delay
            return True

    def counts(self) -> dict[str, int]:
        with self.store.session() as s:
            rows = s.execute(select(EventRow.status, func.count()).group_by(EventRow.status))
            return {status: int(n) for status, n in rows}
