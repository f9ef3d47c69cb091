"""Prometheus metrics of the service, in a registry of its own.

Latencies and confidences are recorded as they happen; queue depth, jobs by
status and webhook events are read from the database at scrape time, so they
count the work of every process sharing it. GPU utilization and memory come
from NVML when a GPU and its driver are present.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reelscope.monitor.health import Monitor
from reelscope.monitor.metrics import MonitorCollector
from reelscope.report import Report
from reelscope.store.events import Outbox
from reelscope.store.jobs import JobQueue
from reelscope.store.store import Store

log = logging.getLogger("reelscope.service")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class Metrics:
    """``shared``: also the database's counts (queue, jobs, webhook events), which every
    process sharing it sees alike; a worker whose metrics a server gathers leaves them
    to the server."""

    def __init__(self, store: Store, *, shared: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "reelscope_http_request_duration_seconds",
            "HTTP request latency",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "reelscope_stage_duration_seconds",
            "time spent in each analysis stage",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.confidence = Histogram(
            "reelscope_task_confidence",
            "confidence of each task's outputs (label scores, caption scores, match scores)",
            ("task",),
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.finished = Counter(
            "reelscope_jobs_finished",
            "jobs finished by this process",
            ("status",),
            registry=self.registry,
        )
        if shared:
            self.registry.register(_DatabaseCollector(store))
        gpu = _GpuCollector.open()
        if gpu is not None:
            self.registry.register(gpu)

    def watch(self, monitor: Monitor) -> None:
        """Export the engines' health (fallback, drift, latency) of this process."""
        self.registry.register(MonitorCollector(monitor))

    def families(self) -> list[Metric]:
        """Everything this registry holds now."""
        return list(self.registry.collect())

    def observe_report(self, report: Report) -> None:
        for stage, seconds in report.timings_s.items():
            self.stages.labels(stage).observe(seconds)
        for label in report.labels:
            self.confidence.labels("classify").observe(label.score)
        for entry in report.ocr:
            self.confidence.labels("ocr").observe(entry.score)
        for match in report.copyright:
            self.confidence.labels("copyright").observe(match.score)


class _DatabaseCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.jobs = JobQueue(store)
        self.outbox = Outbox(store)

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.jobs.counts()
            events = self.outbox.counts()
        except Exception as exc:  # a scrape must not fail because the database did
            log.warning("metrics: cannot read the queue: %s", exc)
            return
        depth = GaugeMetricFamily("reelscope_queue_depth", "jobs waiting for a worker")
        depth.add_metric([], counts["queued"])
        yield depth
        jobs = GaugeMetricFamily("reelscope_jobs", "jobs by status", labels=["status"])
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs
        hooks = GaugeMetricFamily(
            "reelscope_webhook_events", "completion events by delivery status", labels=["status"]
        )
        for status in ("pending", "delivered", "failed"):
            hooks.add_metric([status], events.get(status, 0))
        yield hooks


class _GpuCollector(Collector):
    """GPU utilization and memory through NVML (nvidia-ml-py), read at scrape time."""

    def __init__(self, nvml: Any, count: int) -> None:
        self.nvml = nvml
        self.count = count

    @classmethod
    def open(cls) -> _GpuCollector | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception:  # no package, no driver or no GPU: no GPU metrics
            return None
        return cls(pynvml, count) if count else None

    def collect(self) -> Iterator[Metric]:
        util = GaugeMetricFamily(
            "reelscope_gpu_utilization_ratio", "GPU busy fraction", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "reelscope_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"]
        )
        total = GaugeMetricFamily("reelscope_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        for i in range(self.count):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(i)
                rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                log.warning("metrics: NVML cannot read GPU %d: %s", i, exc)
                continue
            util.add_metric([str(i)], rates.gpu / 100.0)
            used.add_metric([str(i)], memory.used)
            total.add_metric([str(i)], memory.total)
        yield from (util, used, total)


def labelled(families: Iterable[Metric], **labels: str) -> list[Metric]:
    """The same metrics with ``labels`` added to every sample."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={**s.labels, **labels}) for s in family.samples]
        out.append(copy)
    return out


class Merged:
    """Several collectors' metrics as one family per name (a family that two of them
    export once, its samples apart by their labels), for ``generate_latest``."""

    def __init__(self, *sources: _Source) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, Metric] = {}
        for source in self.sources:
            for family in source.collect():
                into = by_name.setdefault(family.name, Metric(
                    family.name, family.documentation, family.type, family.unit))
                into.samples.extend(family.samples)
        yield from by_name.values()


class _Source(Protocol):
    def collect(self) -> Iterable[Metric]: ...
