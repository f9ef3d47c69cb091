"""Per-task health: a small state machine fed by every call of a guarded engine.

    healthy --(error, NaN/inf, drift, latency over budget)--> fallback   (one alert)
    fallback --(cool-down over: shadow probes of the engine)--> healthy  (after N good probes)

Thread-safe: the workers of one process share a task's health.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from reelscope.monitor import drift
from reelscope.monitor.policy import MonitorPolicy

log = logging.getLogger("reelscope.monitor")
Route = Literal["engine", "fallback", "probe"]
LATENCY_SAMPLES = 500


@dataclass(frozen=True)
class Alert:
    task: str
    event: Literal["degraded", "recovered"]
    reason: str
    incident: int
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"event": f"task.{self.event}", "task": self.task, "reason": self.reason,
                "incident": self.incident, "at": self.at}


AlertSink = Callable[[Alert], None]


class TaskHealth:
    def __init__(
        self,
        task: str,
        policy: MonitorPolicy,
        reference: np.ndarray | None,
        sink: AlertSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.policy = policy
        self.reference = None if reference is None or len(reference) < 8 else reference
        self.sink = sink
        self.clock = clock
        self._lock = threading.Lock()
        self.state: Literal["healthy", "fallback"] = "healthy"
        self.window: deque[float] = deque(maxlen=policy.window)
        self.shadow: deque[bool] = deque(maxlen=policy.shadow_window)
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.requests = 0
        self.errors = 0
        self.invalid = 0
        self.served_by_fallback = 0
        self.incidents = 0
        self.alerts = 0
        self.reason = ""
        self.since = clock()
        self.psi: float | None = None
        self.ks: float | None = None
        self._strikes = 0
        self._good_probes = 0
        self._probing = False

    # routing ------------------------------------------------------------------------

    def route(self) -> Route:
        with self._lock:
            self.requests += 1
            if self.state == "healthy":
                return "engine"
            self.served_by_fallback += 1
            if not self._probing and self.clock() - self.since >= self.policy.cooldown_s:
                self._probing = True
                return "probe"
            return "fallback"

    # what the engine did ------------------------------------------------------------

    def engine_ok(self, confidences: np.ndarray, latency_s: float) -> None:
        with self._lock:
            self.latencies.append(latency_s)
            self.window.extend(float(c) for c in confidences)
            budget = self.policy.latency_budget_s
            self._strikes = self._strikes + 1 if budget and latency_s > budget else 0
            if self._strikes >= self.policy.latency_strikes:
                self._trip(f"latency {latency_s:.2f} s over the {budget:g} s budget "
                           f"{self._strikes} times in a row")
                return
            if self.reference is not None and len(self.window) == self.window.maxlen:
                window = np.fromiter(self.window, np.float64)
                self.psi = drift.psi(self.reference, window)
                self.ks = drift.ks(self.reference, window)
                if self.psi > self.policy.psi_max or self.ks > self.policy.ks_max:
                    self._trip(f"confidence drift: PSI {self.psi:.2f} (max "
                               f"{self.policy.psi_max:g}), KS {self.ks:.2f} (max "
                               f"{self.policy.ks_max:g}) over the last {len(window)} outputs")

    def shadow_result(self, matches: np.ndarray) -> None:
        """Top-1 matches (engine vs fallback) of the items checked in the shadow."""
        with self._lock:
            if self.state != "healthy":
                return
            self.shadow.extend(bool(m) for m in matches)
            if len(self.shadow) < (self.shadow.maxlen or 1):
                return
            agree = sum(self.shadow) / len(self.shadow)
            if agree < self.policy.shadow_agreement:
                self._trip(f"shadow check: top-1 agreement {agree:.2f} with the fp32 reference "
                           f"(min {self.policy.shadow_agreement:g}) on the last "
                           f"{len(self.shadow)} checked outputs")

    def engine_failed(self, error: str, invalid: bool = False) -> None:
        with self._lock:
            if invalid:
                self.invalid += 1
            else:
                self.errors += 1
            self.served_by_fallback += 1
            self._trip(error)

    def probe_result(self, healthy: bool, detail: str) -> None:
        with self._lock:
            self._probing = False
            if not healthy:
                self._good_probes = 0
                self.since = self.clock()  # another cool-down
                log.info("probe of %s engine failed: %s", self.task, detail)
                return
            self._good_probes += 1
            if self._good_probes >= self.policy.probes:
                self.state = "healthy"
                self.since = self.clock()
                self.window.clear()
                self.shadow.clear()
                self.psi = self.ks = None
                self._strikes = self._good_probes = 0
                alert = Alert(self.task, "recovered",
                              f"{self.policy.probes} shadow probes agreed with the fallback "
                              f"({detail})", self.incidents, time.time())
                self.reason = ""
                self._emit(alert)

    def _trip(self, reason: str) -> None:
        if self.state == "fallback":
            return  # the same incident: no second alert
        self.state = "fallback"
        self.since = self.clock()
        self.incidents += 1
        self.alerts += 1
        self.reason = reason
        self.shadow.clear()
        self._strikes = self._good_probes = 0
        self._probing = False
        self._emit(Alert(self.task, "degraded", reason, self.incidents, time.time()))

    def _emit(self, alert: Alert) -> None:
        try:
            self.sink(alert)
        except Exception:  # an alert channel must never break an analysis
            log.exception("alert sink failed")

    # reading ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = np.fromiter(self.latencies, np.float64)
            pct = {
                f"latency_p{q}_s": round(float(np.percentile(lat, q)), 4) if len(lat) else None
                for q in (50, 95, 99)
            }
            return {
                "task": self.task,
                "state": self.state,
                "path": "fallback" if self.state == "fallback" else "engine",
                "reason": self.reason,
                "incidents": self.incidents,
                "alerts": self.alerts,
                "requests": self.requests,
                "errors": self.errors,
                "invalid_outputs": self.invalid,
                "served_by_fallback": self.served_by_fallback,
                "error_rate": round((self.errors + self.invalid) / self.requests, 4)
                if self.requests else 0.0,
                "drift_psi": None if self.psi is None else round(self.psi, 4),
                "drift_ks": None if self.ks is None else round(self.ks, 4),
                "window": len(self.window),
                "shadow_agreement": round(sum(self.shadow) / len(self.shadow), 4)
                if self.shadow else None,
                "reference": 0 if self.reference is None else len(self.reference),
                **pct,
            }


class Alerter:
    """Where alerts go: a log line always, a webhook when one is configured."""

    def __init__(self, webhook_url: str = "") -> None:
        self.webhook_url = webhook_url
        self.sent: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.sent.append(alert)
        if alert.event == "degraded":
            log.warning("ALERT %s: engine bypassed, serving the fp32 reference (incident %d): %s",
                        alert.task, alert.incident, alert.reason)
        else:
            log.warning("RESOLVED %s: engine restored (incident %d): %s", alert.task,
                        alert.incident, alert.reason)
        if self.webhook_url:
            threading.Thread(target=self._post, args=(alert,), daemon=True).start()

    def _post(self, alert: Alert) -> None:
        import httpx

        body = json.dumps(alert.to_dict()).encode()
        for attempt in range(3):
            try:
                response = httpx.post(self.webhook_url, content=body, timeout=10,
                                      headers={"Content-Type": "application/json"})
                if response.status_code < 300:
                    return
            except httpx.HTTPError as exc:
                log.warning("alert webhook: %s", exc)
            time.sleep(2**attempt)
        log.error("alert webhook %s unreachable; the alert is in the log only",
                  self.webhook_url)


class Monitor:
    """The health of every guarded task of one process."""

    def __init__(self, policy: MonitorPolicy, alerter: Alerter | None = None) -> None:
        self.policy = policy
        self.alerter = alerter or Alerter()
        self.tasks: dict[str, TaskHealth] = {}

    def task(self, name: str, reference: np.ndarray | None) -> TaskHealth:
        health = TaskHealth(name, self.policy, reference, self.alerter)
        self.tasks[name] = health
        return health

    def snapshot(self) -> list[dict[str, Any]]:
        return [t.snapshot() for t in self.tasks.values()]
