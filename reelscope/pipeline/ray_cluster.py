"""reelscope on a Ray cluster: one analysis actor per GPU (or per few CPUs), each holding
one runtime, for ``reelscope batch`` (:func:`run_ray`) and for the service's workers
(:class:`ServiceWorkers`).

A batch actor analyzes ``batch_in_flight`` videos at once from their paths, so that
decoded frames never enter Ray's object store; only paths go out and small results come
back. Each path is one call: the actor fetches the file once (a URI's copy stays on the
actor's node), hashes it, looks its content up in the database, claims the content for
that path from the run's claims actor (on the driver's node) and analyzes it.

The driver hands each actor work as it has room. An actor lost with its process or its
node (Ray raises ``RayActorError`` for its calls) is replaced by a new one when the
cluster has room for it, and its videos are analyzed again, each at most
``ray_max_retries`` more times. Reports are stored by content hash and the claims are
the driver's, so a retry never stores a report twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from reelscope.config import Settings
from reelscope.errors import ConfigError
from reelscope.pipeline.batch import (
    ItemResult,
    LocalClaims,
    StoredAnalyzer,
    analyze_item,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)


class _Analysis:
    """One runtime on the actor's device (Ray sets the GPU it holds as the only one
    visible), its models loaded when the actor starts."""

    def __init__(self, settings: Settings, claims: Any) -> None:
        from reelscope.pipeline.runtime import Runtime

        self.runtime = Runtime(settings)
        self.runtime.load_all()
        self.analyzer = StoredAnalyzer(settings, self.runtime)
        self.claims = _ClaimsClient(claims)

    def analyze(self, path: str) -> ItemResult:
        return analyze_item(self.analyzer, path, self.claims)


class _ClaimsClient:
    """The run's claims, held by one actor (a :class:`LocalClaims`) for every analysis
    actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def claim(self, sha256: str, path: str) -> str:
        import ray

        owner: str = ray.get(self.actor.claim.remote(sha256, path))
        return owner


class _ServiceWorker:
    """The service's analysis workers (``settings.workers`` threads over one runtime),
    taking jobs from the database and uploads from the shared spool; the server asks it
    for its health and metrics."""

    def __init__(self, settings: Settings) -> None:
        from reelscope.service.metrics import Metrics
        from reelscope.service.worker import WorkerPool
        from reelscope.store.store import Store

        store = Store(settings.database_url)
        self.metrics = Metrics(store, shared=False)  # the server reports the database's
        self.pool = WorkerPool(settings, store, self.metrics)
        self.pool.runtime.load_all()
        self.metrics.watch(self.pool.runtime.monitor)
        self.pool.start(max(1, settings.workers))

    def name(self) -> str:
        return self.pool.name

    def monitor(self) -> list[dict[str, Any]]:
        return [{**task, "worker": self.pool.name}
                for task in self.pool.runtime.monitor.snapshot()]

    def metrics_families(self) -> list[Any]:
        from reelscope.service.metrics import labelled

        return labelled(self.metrics.families(), worker=self.pool.name)

    def stop(self) -> None:
        self.pool.stop()


class ServiceWorkers:
    """The service's workers as actors on the Ray cluster ``settings.ray``, one per GPU
    (or per ``ray_cpus_per_actor`` CPUs); the jobs stay in the database, so a lost
    actor's job is run again by another once its lease ends. Their health and metrics
    are gathered when the server is asked (a worker that does not answer within
    ``ASK_S`` is left out, with a warning)."""

    ASK_S = 10.0

    def __init__(self, settings: Settings) -> None:
        import ray

        self.started = _connect(settings.ray)
        count, each = _actor_options(settings)
        shipped = _shipped(settings, each, spool=True)
        remote: Any = ray.remote
        self.actors = [remote(max_restarts=-1, **each)(_ServiceWorker).remote(shipped)
                       for _ in range(count)]
        self.workers = count * max(1, settings.workers)
        names = ray.get([a.name.remote() for a in self.actors])
        log.info("%d analysis worker actor(s) on the Ray cluster (%s each; the cluster has "
                 "%s): %s", count, each, ray.cluster_resources(), ", ".join(names))

    def _ask(self, method: str) -> list[Any]:
        """Each live actor's answer to ``method``, in order."""
        import ray

        calls = [getattr(a, method).remote() for a in self.actors]
        ready, late = ray.wait(calls, num_returns=len(calls), timeout=self.ASK_S)
        answers = []
        for call in ready:
            try:
                answers.append(ray.get(call))
            except ray.exceptions.RayError as exc:
                log.warning("an analysis worker actor cannot answer: %s",
                            str(exc).splitlines()[0])
        if late:
            log.warning("%d analysis worker actor(s) did not answer within %.0f s",
                        len(late), self.ASK_S)
        return answers

    def monitor(self) -> list[dict[str, Any]]:
        return [task for tasks in self._ask("monitor") for task in tasks]

    def collect(self) -> Iterator[Metric]:
        for families in self._ask("metrics_families"):
            yield from families

    def stop(self) -> None:
        import ray

        try:
            ray.get([a.stop.remote() for a in self.actors], timeout=60)
        finally:
            for actor in self.actors:
                ray.kill(actor)
            if self.started:
                ray.shutdown()


def _shipped(settings: Settings, each: dict[str, float], spool: bool = False) -> Settings:
    """The settings an actor gets: every node reads the same database (and, with
    ``spool``, the service's spool folder) by the address resolved here, and keeps its own
    model cache; a runtime keeps to the CPUs its actor holds."""
    return dataclasses.replace(
        settings, db=settings.database_url, ray="",
        spool_dir=str(settings.spool_path) if spool else settings.spool_dir,
        threads=settings.threads or max(1, int(each["num_cpus"])))


def _connect(where: str) -> bool:
    """Connect to (or, for ``local``, start) Ray; True when this run started it."""
    import ray

    if ray.is_initialized():
        return False
    if where == "local":
        ray.init(include_dashboard=False, log_to_driver=False)
        return True
    try:
        ray.init(address=where, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {where!r}: {exc}") from exc
    return False


def _actor_options(settings: Settings) -> tuple[int, dict[str, float]]:
    """(how many analysis actors, the resources of each) for the cluster joined."""
    import ray

    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0.0)
    if gpus:
        fits = int(gpus // settings.ray_gpus_per_actor)
        # the cluster's cores shared out: decoding and the CPU's part of the work
        each = {"num_gpus": settings.ray_gpus_per_actor,
                "num_cpus": float(max(1, int(resources.get("CPU", 1.0)) // max(1, fits)))}
    else:
        each = {"num_cpus": settings.ray_cpus_per_actor}
        fits = int(resources.get("CPU", 0.0) // settings.ray_cpus_per_actor)
    if not fits and not settings.ray_actors:
        raise ConfigError(f"the Ray cluster has no room for an analysis actor "
                          f"({resources.get('CPU', 0)} CPUs, {gpus} GPUs; each needs {each})")
    return settings.ray_actors or fits, each


def run_ray(paths: Sequence[str], settings: Settings,
            on_result: Callable[[ItemResult], None] = lambda r: None) -> list[ItemResult]:
    """Every path through analysis actors on the Ray cluster ``settings.ray``;
    ``on_result`` is called as each one ends."""
    # Ray prints its nodes' messages (a worker died, ...) on the driver's stdout, which
    # belongs to the command's output (say, --json): they go to stderr instead
    with contextlib.redirect_stdout(sys.stderr):
        return _run(paths, settings, on_result)


_RESOURCE = {"num_cpus": "CPU", "num_gpus": "GPU"}


class _Actors:
    """The run's analysis actors by slot. A lost actor leaves its slot empty until the
    cluster has room for a new one (a lost node's share may never come back), so the
    others take its videos meanwhile."""

    def __init__(self, make: Callable[[], Any], count: int, each: dict[str, float],
                 in_flight: int) -> None:
        self.make, self.each, self.in_flight = make, each, in_flight
        self.slots: list[Any] = [make() for _ in range(count)]  # None: lost
        self.load = [0] * count

    def free_slot(self) -> int | None:
        """The live actor with the most room, or None when every one is full."""
        open_ = [i for i, a in enumerate(self.slots)
                 if a is not None and self.load[i] < self.in_flight]
        return min(open_, key=self.load.__getitem__) if open_ else None

    def lost(self, slot: int, actor: Any) -> None:
        import ray

        if self.slots[slot] is actor:  # not seen yet (its other calls fail too)
            ray.kill(actor, no_restart=True)
            self.slots[slot] = None

    def refill(self) -> None:
        import ray

        empty = [i for i, a in enumerate(self.slots) if a is None]
        if not empty:
            return
        live = len(self.slots) - len(empty)
        free = ray.available_resources()
        for slot in empty:
            room = all(free.get(_RESOURCE[k], 0.0) >= v for k, v in self.each.items())
            if room or not live:  # with none left, wait for room
                log.warning("a new analysis actor replaces one that was lost")
                self.slots[slot] = self.make()
                live += 1
                for k, v in self.each.items():
                    free[_RESOURCE[k]] = free.get(_RESOURCE[k], 0.0) - v


def _run(paths: Sequence[str], settings: Settings,
         on_result: Callable[[ItemResult], None]) -> list[ItemResult]:
    import ray
    from ray.exceptions import RayActorError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = _connect(settings.ray)
    try:
        count, each = _actor_options(settings)
        shipped = _shipped(settings, each)
        remote: Any = ray.remote  # its stubs do not know actors' options
        # the claims live on the driver's node: they go only when the run does
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                              soft=False)
        claims = remote(num_cpus=0, scheduling_strategy=here)(LocalClaims).remote()
        actor_class = remote(max_concurrency=settings.batch_in_flight, **each)(_Analysis)
        actors = _Actors(lambda: actor_class.remote(shipped, claims), count, each,
                         settings.batch_in_flight)
        pending: deque[str] = deque(paths)
        attempts: dict[str, int] = {}
        running: dict[Any, tuple[str, int, Any]] = {}  # call -> (path, slot, its actor)
        results: list[ItemResult] = []

        def finish(result: ItemResult) -> None:
            results.append(result)
            on_result(result)

        while pending or running:
            actors.refill()
            while pending and (slot := actors.free_slot()) is not None:
                path, actor = pending.popleft(), actors.slots[slot]
                running[actor.analyze.remote(path)] = (path, slot, actor)
                actors.load[slot] += 1
            ready, _ = ray.wait(list(running), num_returns=1, timeout=5.0)
            for ref in ready:
                path, slot, actor = running.pop(ref)
                actors.load[slot] -= 1
                try:
                    finish(ray.get(ref))
                except RayActorError as exc:
                    reason = str(exc).splitlines()[0]
                    log.warning("an analysis actor was lost (%s)", reason)
                    actors.lost(slot, actor)
                    attempts[path] = attempts.get(path, 0) + 1
                    if attempts[path] <= settings.ray_max_retries:
                        pending.appendleft(path)
                    else:
                        finish(ItemResult(path, "failed", error=(
                            f"its analysis actor was lost {attempts[path]} times: {reason}")))
        return results
    finally:
        if started:
            ray.shutdown()
