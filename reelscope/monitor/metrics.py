"""The monitor's state as Prometheus metrics, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reelscope.monitor.health import Monitor


class MonitorCollector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        tasks = self.monitor.snapshot()
        active = GaugeMetricFamily("reelscope_task_fallback_active",
                                   "1 while the task's engine is bypassed", labels=["task"])
        psi = GaugeMetricFamily("reelscope_task_drift_psi",
                                "confidence drift against the engine's reference (PSI)",
                                labels=["task"])
        ks = GaugeMetricFamily("reelscope_task_drift_ks",
                               "confidence drift against the engine's reference (KS)",
                               labels=["task"])
        shadow = GaugeMetricFamily("reelscope_task_shadow_agreement",
                                   "top-1 agreement of shadow-checked outputs with the fp32 "
                                   "reference", labels=["task"])
        latency = GaugeMetricFamily("reelscope_task_latency_seconds",
                                    "engine call latency percentiles (recent calls)",
                                    labels=["task", "quantile"])
        counters = {
            key: CounterMetricFamily(f"reelscope_task_{key}", text, labels=["task"])
            for key, text in (
                ("requests", "engine calls routed"),
                ("errors", "engine calls that raised"),
                ("invalid_outputs", "engine calls that returned NaN or inf"),
                ("served_by_fallback", "calls answered by the fp32 reference"),
                ("alerts", "alerts raised (one per incident)"),
            )
        }
        for t in tasks:
            task = t["task"]
            active.add_metric([task], 1.0 if t["state"] == "fallback" else 0.0)
            if t["drift_psi"] is not None:
                psi.add_metric([task], t["drift_psi"])
                ks.add_metric([task], t["drift_ks"])
            if t["shadow_agreement"] is not None:
                shadow.add_metric([task], t["shadow_agreement"])
            for q in (50, 95, 99):
                value = t[f"latency_p{q}_s"]
                if value is not None:
                    latency.add_metric([task, f"0.{q}"], value)
            for key, family in counters.items():
                family.add_metric([task], t[key])
        yield from (active, psi, ks, shadow, latency, *counters.values())
