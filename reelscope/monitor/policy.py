"""When a task's engine is bypassed, and when it is trusted again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reelscope.errors import ConfigError

if TYPE_CHECKING:
    from reelscope.config import Settings


@dataclass(frozen=True)
class MonitorPolicy:
    """Thresholds; see docs/monitoring.md for how they were chosen."""

    window: int = 288  # confidences in the drift window (frames, for the classifier)
    psi_max: float = 1.0  # drift: population stability index against the reference
    ks_max: float = 0.4  # drift: Kolmogorov-Smirnov statistic against the reference
    shadow_items: int = 4  # of each engine call's batch, also run on the fallback (0 = off)
    shadow_window: int = 16  # shadow-checked items judged together
    shadow_agreement: float = 0.5  # top-1 agreement with the fallback below this trips
    latency_budget_s: float = 5.0  # one call (a batch) slower than this is a strike; 0 = off
    latency_strikes: int = 3  # consecutive strikes that switch to the fallback
    cooldown_s: float = 60.0  # time on the fallback before the engine is probed
    probes: int = 3  # consecutive healthy shadow runs that restore the engine
    probe_agreement: float = 0.9  # top-1 agreement with the fallback a probe needs

    @classmethod
    def of(cls, settings: Settings) -> MonitorPolicy:
        """The policy the ``monitor_*`` settings give (the rest as defaults)."""
        return cls(window=settings.monitor_window, psi_max=settings.monitor_psi_max,
                   ks_max=settings.monitor_ks_max, shadow_items=settings.monitor_shadow_items,
                   shadow_agreement=settings.monitor_shadow_agreement,
                   latency_budget_s=settings.monitor_latency_budget_s,
                   cooldown_s=settings.monitor_cooldown_s, probes=settings.monitor_probes)

    def __post_init__(self) -> None:
        if self.window < 8:
            raise ConfigError(f"monitor window must be at least 8, got {self.window}")
        if self.shadow_items < 0 or self.shadow_window < 1:
            raise ConfigError("monitor shadow items must be >= 0 and its window >= 1")
        if self.probes < 1 or self.latency_strikes < 1:
            raise ConfigError("monitor probes and latency strikes must be at least 1")
        if min(self.psi_max, self.ks_max, self.cooldown_s, self.latency_budget_s) < 0:
            raise ConfigError("monitor thresholds must not be negative")
