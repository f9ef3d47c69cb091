"""Deliver completion events from the outbox to each key's webhook URL.

At least once: an event is marked delivered only after its receiver answered
2xx, and retried with exponential backoff otherwise. Every request carries the
event's id (``X-Reelscope-Event-Id``) so that a receiver can drop a repeat.
"""

from __future__ import annotations

import logging
import threading

import httpx

from reelscope.config import Settings
from reelscope.errors import ReelscopeError
from reelscope.store.events import Event, Outbox
from reelscope.store.store import Store

log = logging.getLogger("reelscope.webhooks")
POLL_S = 0.5
TIMEOUT_S = 10.0


class Deliverer:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.outbox = Outbox(store)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._client.close()

    def deliver_due(self) -> int:
        """Send every event that is due; returns how many were sent successfully."""
        sent = 0
        for event in self.outbox.claim_due():
            error = self._send(event)
            if error is None:
                self.outbox.delivered(event.id)
                sent += 1
            elif self.outbox.failed_attempt(
                event.id, error, self.settings.webhook_backoff_s, self.settings.webhook_max_attempts
            ):
                log.warning("webhook event %d to %s failed (%s); will retry", event.id,
                            event.url, error)
            else:
                log.error("webhook event %d to %s failed for good: %s", event.id, event.url,
                          error)
        return sent

    def _send(self, event: Event) -> str | None:
        try:
            response = self._client.post(
                event.url,
                content=event.payload.encode(),
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "reelscope-webhook",
                    "X-Reelscope-Event-Id": str(event.id),
                },
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except ReelscopeError as exc:
                log.warning("webhooks: %s", exc)
            self._stop.wait(POLL_S)
