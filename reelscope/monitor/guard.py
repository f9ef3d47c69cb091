"""An engine guarded by its fp32 reference: the same runner interface, two paths.

Every call goes to the engine while its task is healthy; a few items of each
call are also run on the fallback in the shadow and their top-1 compared (the
fastest sign of an engine gone wrong). An exception or a
NaN/inf output switches the task to the fallback at once, and the same call is
answered by the fallback, so no video fails because of the switch. Drift and
latency are judged by :class:`~reelscope.monitor.health.TaskHealth`. On the
fallback, after the cool-down, a call also runs the engine in the shadow and
compares it with the fallback's answer (the probe).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from reelscope.engine.base import Runner, TensorSpec
from reelscope.errors import ShapeError
from reelscope.monitor import drift
from reelscope.monitor.health import TaskHealth

log = logging.getLogger("reelscope.monitor")


class GuardedRunner(Runner):
    NAME: ClassVar[str] = "guarded"

    def __init__(
        self,
        primary: Runner,
        fallback: Runner,
        health: TaskHealth,
        confidence_output: str,
        shadow_every: int = 1,
    ) -> None:
        """``shadow_every``: run the shadow check on every n-th engine call (a model called
        once per frame, such as a text detector, would otherwise pay double)."""
        super().__init__(primary.profiles)
        self.primary = primary
        self.fallback = fallback
        self.health = health
        self.output = confidence_output
        self.shadow_every = max(1, shadow_every)
        self._calls = 0
        self._local = threading.local()

    @property
    def precision(self) -> str:
        return self.primary.precision

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.primary.input_specs

    def activate(self) -> None:
        self.primary.__enter__()
        self.fallback.__enter__()

    def deactivate(self) -> None:
        self.primary.__exit__(None, None, None)
        self.fallback.__exit__(None, None, None)

    # which path served this thread's calls since begin() ------------------------------

    def begin(self) -> None:
        self._local.paths = set()

    def paths(self) -> set[str]:
        return set(getattr(self._local, "paths", set()))

    def _served(self, path: str) -> None:
        if not hasattr(self._local, "paths"):
            self._local.paths = set()
        self._local.paths.add(path)

    # running ------------------------------------------------------------------------

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        route = self.health.route()
        if route == "engine":
            return self._engine_first(feed)
        try:
            out = self.fallback.infer(feed)
        except Exception:
            if route == "probe":  # no answer to compare with: try again after a cool-down
                self.health.probe_result(False, "the fallback itself failed")
            raise
        self._served("fallback")
        if route == "probe":
            self._probe(feed, out)
        return out

    def _engine_first(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            out = self.primary.infer(feed)
        except ShapeError:
            raise  # the input is wrong, not the engine
        except Exception as exc:
            self.health.engine_failed(f"engine raised {type(exc).__name__}: {exc}")
            out = None
        latency = time.perf_counter() - start
        if out is not None:
            bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
            if not bad:
                self.health.engine_ok(drift.top1_confidence(out[self.output]), latency)
                self._shadow(feed, out)
                self._served("engine")
                return out
            self.health.engine_failed(f"engine output {bad[0]!r} holds NaN or inf", invalid=True)
        answer = self.fallback.infer(feed)
        self._served("fallback")
        return answer

    def _shadow(self, feed: Mapping[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
        """Run a few of the batch's items on the fallback too and compare their top-1."""
        k = self.health.policy.shadow_items
        n = len(out[self.output])
        self._calls += 1
        if k <= 0 or n == 0 or (self._calls - 1) % self.shadow_every:
            return
        picks = np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))
        try:
            ref = self.fallback.infer({name: value[picks] for name, value in feed.items()})
        except Exception as exc:  # the fallback itself failing is not the engine's fault
            log.warning("shadow check of %s skipped: fallback raised %s", self.health.task, exc)
            return
        self.health.shadow_result(drift.top1_matches(out[self.output][picks], ref[self.output]))

    def _probe(self, feed: Mapping[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
        try:
            out = self.primary.infer(feed)
        except Exception as exc:
            self.health.probe_result(False, f"raised {type(exc).__name__}: {exc}")
            return
        if not all(np.all(np.isfinite(v)) for v in out.values()):
            self.health.probe_result(False, "NaN or inf in its outputs")
            return
        agree = drift.agreement(out[self.output], reference[self.output])
        ok = agree >= self.health.policy.probe_agreement
        self.health.probe_result(ok, f"top-1 agreement {agree:.2f}")


class GuardedSession:
    """An ONNX Runtime session's face over a guarded runner, for libraries that call
    ``session.run`` themselves (rapidocr): metadata from the engine's own session."""

    def __init__(self, runner: GuardedRunner, session: Any) -> None:
        self.runner = runner
        self.session = session

    def run(self, output_names: list[str] | None, feed: Mapping[str, np.ndarray],
            *_: object) -> list[np.ndarray]:
        out = self.runner.infer(feed)
        names = output_names or [o.name for o in self.session.get_outputs()]
        return [out[name] for name in names]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)
