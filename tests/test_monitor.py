"""Monitoring and fallback, by fault injection into the real classifier engine.

The engine is the real EfficientNet-Lite0 built by ``reelscope engine build``
with a drift reference recorded on representative clips; the traffic is other
such clips (12 s, 24 sampled frames each), analyzed by one long-lived process
as a service worker does. With the defaults, a damaged engine is bypassed after
at most N = 4 videos by the shadow check (4 frames a call compared with the fp32
reference, judged 16 at a time), and by confidence drift alone after at most
16 videos (a 288-frame window, then a margin: docs/monitoring.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import traffic
from conftest import SAMPLE
from faults import flattened_engine, nan_engine, perturb_engine
from service_harness import Receiver

from reelscope.config import Settings
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.store.store import Store
from reelscope.tasks import classify

FRAMES_PER_VIDEO = 24
N_SHADOW = math.ceil(16 / Settings().monitor_shadow_items)  # 4
# The drift window fills after 12 videos; the damaged engine's drift crossed the default
# thresholds within 4 more on the clips measured (docs/monitoring.md).
N_DRIFT = math.ceil(Settings().monitor_window / FRAMES_PER_VIDEO) + 4  # 16


@pytest.fixture(scope="module")
def clip_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("traffic")
    pictures = traffic.load_photos(root / "photos")
    return {
        "reference": traffic.write_clips(root / "reference", range(0, 12), pictures),
        "traffic": traffic.write_clips(root / "traffic", range(100, 130), pictures),
    }


@pytest.fixture(scope="module")
def good_engine(
    clip_sets: dict[str, list[Path]], cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("engines") / "classifier.engine"
    onnx_path = classify.export_onnx(cache_dir)
    result = subprocess.run(
        [sys.executable, "-m", "reelscope", "engine", "build", str(onnx_path),
         "--precision", "fp32", "--normalize", "symmetric",
         "--profile", "image=1x3x224x224:8x3x224x224:32x3x224x224",
         "--monitor-reference", str(clip_sets["reference"][0].parent), "-o", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def analyze(tmp_path: Path, cache_dir: Path) -> Iterator[Callable[..., Analyzer]]:
    made: list[tuple[Store, Runtime]] = []

    def make(engine: Path | None, **settings: Any) -> Analyzer:
        s = Settings.from_env({}, db=str(tmp_path / "db.sqlite"), cache_dir=str(cache_dir),
                              classifier_engine=str(engine or ""), **settings)
        store, runtime = Store(s.database_url), Runtime(s)
        made.append((store, runtime))
        return Analyzer(s, store, runtime)

    yield make
    for store, runtime in made:
        runtime.close()
        store.close()


def _run(analyzer: Analyzer, clips: list[Path]) -> list[dict[str, Any]]:
    """Analyze each clip (again, even if stored); its classifier entry and labels."""
    out = []
    for clip in clips:
        report = analyzer.analyze(clip, force=True).report
        entry = report.engines["classify"]
        out.append({"path": entry.path, "active": entry.fallback_active,
                    "labels": [(lb.label, lb.start_s, lb.end_s) for lb in report.labels]})
    return out


def test_reference_distribution_is_stored_with_the_engine(good_engine: Path) -> None:
    inspect = subprocess.run(
        [sys.executable, "-m", "reelscope", "engine", "inspect", str(good_engine), "--json"],
        capture_output=True, text=True, check=True,
    )
    monitor = json.loads(inspect.stdout)["monitor"]
    assert monitor["output"] == "logits"
    assert "centre crops" in monitor["origin"]
    values = np.array(monitor["values"])
    assert len(values) >= 150 and values.min() > 0 and values.max() <= 1  # 16 frames a clip


def test_normal_traffic_raises_no_alarm(
    analyze: Callable[..., Analyzer], good_engine: Path, clip_sets: dict[str, list[Path]]
) -> None:
    analyzer = analyze(good_engine)
    runs = _run(analyzer, clip_sets["traffic"])
    assert {r["path"] for r in runs} == {"engine"}
    health = analyzer.runtime.monitor.tasks["classify"].snapshot()
    assert health["incidents"] == 0 and health["drift_psi"] is not None
    assert health["drift_psi"] < Settings().monitor_psi_max
    assert health["shadow_agreement"] == 1.0  # fp32 engine and fp32 reference agree


def _bypassed_within(
    analyze: Callable[..., Analyzer], good_engine: Path, damaged: Path, clips: list[Path],
    n: int, **settings: Any,
) -> Analyzer:
    healthy = _run(analyze(good_engine), clips)
    analyzer = analyze(damaged, **settings)
    runs = _run(analyzer, clips)
    switched = next(i for i, r in enumerate(runs) if r["active"])
    assert switched < n  # the n-th video's analysis at the latest trips the switch
    assert all(r["path"] == "engine" for r in runs[:switched])
    # the video in flight: its frames before the switch by the engine, after it by the
    # fp32 reference
    assert runs[switched]["path"] in ("engine", "engine+fallback")
    assert runs[0]["labels"] != healthy[0]["labels"]  # the damaged engine was really wrong
    for got, want in zip(runs[switched + 1 :], healthy[switched + 1 :], strict=True):
        assert got["path"] == "fallback"
        assert got["labels"] == want["labels"]  # the fp32 reference gives the right labels
    assert [a.event for a in analyzer.runtime.monitor.alerter.sent] == ["degraded"]
    return analyzer


def test_engine_with_damaged_weights_is_bypassed_within_n_videos(
    analyze: Callable[..., Analyzer], good_engine: Path, clip_sets: dict[str, list[Path]],
    tmp_path: Path,
) -> None:
    damaged = perturb_engine(good_engine, tmp_path / "damaged.engine", scale=0.05)
    analyzer = _bypassed_within(analyze, good_engine, damaged,
                                clip_sets["traffic"][: N_SHADOW + 2], N_SHADOW)
    assert "shadow check: top-1 agreement" in analyzer.runtime.monitor.alerter.sent[0].reason


def test_confidence_drift_alone_catches_a_damaged_engine(
    analyze: Callable[..., Analyzer], good_engine: Path, clip_sets: dict[str, list[Path]],
    tmp_path: Path,
) -> None:
    # the same top-1 class everywhere, lower confidences: only the drift check can see it
    damaged = flattened_engine(good_engine, tmp_path / "flattened.engine", factor=0.5)
    analyzer = _bypassed_within(analyze, good_engine, damaged,
                                clip_sets["traffic"][: N_DRIFT + 2], N_DRIFT,
                                monitor_shadow_items=0)
    assert "confidence drift: PSI" in analyzer.runtime.monitor.alerter.sent[0].reason


def test_nan_engine_falls_back_at_once_and_loses_no_video(
    analyze: Callable[..., Analyzer], good_engine: Path, clip_sets: dict[str, list[Path]],
    tmp_path: Path,
) -> None:
    clips = clip_sets["traffic"][:3]
    healthy = _run(analyze(good_engine), clips)
    analyzer = analyze(nan_engine(good_engine, tmp_path / "nan.engine"))
    runs = _run(analyzer, clips)
    assert [r["path"] for r in runs] == ["fallback"] * 3
    assert [r["labels"] for r in runs] == [h["labels"] for h in healthy]
    alerts = analyzer.runtime.monitor.alerter.sent
    assert len(alerts) == 1 and "NaN or inf" in alerts[0].reason
    # the calls in the engine when it failed saw NaN (one per batcher worker at most)
    invalid = analyzer.runtime.monitor.tasks["classify"].snapshot()["invalid_outputs"]
    assert 1 <= invalid <= analyzer.runtime.classifier.served.batcher.options.workers


def test_the_path_is_reported_when_the_engine_is_slower_than_decoding(
    analyze: Callable[..., Analyzer], good_engine: Path, clip_sets: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as on a GPU, the video has finished decoding before its batches are served: the
    # report names the path that served them, not the one it assumes before they are done
    analyzer = analyze(good_engine)
    guarded = analyzer.runtime.classifier.served.runner
    real_infer = guarded.primary._infer
    decoded = threading.Event()

    def slow_nan(feed: Any) -> Any:
        decoded.wait(60)
        return {k: np.full_like(v, np.nan) for k, v in real_infer(feed).items()}

    real_result = classify.ClassifyJob.result

    def result(job: classify.ClassifyJob) -> classify.ClassifyOutput:
        decoded.set()
        return real_result(job)

    monkeypatch.setattr(guarded.primary, "_infer", slow_nan)
    monkeypatch.setattr(classify.ClassifyJob, "result", result)
    (run,) = _run(analyzer, clip_sets["traffic"][:1])
    assert run["path"] == "fallback" and run["active"]


def test_raising_engine_falls_back_then_recovers(
    analyze: Callable[..., Analyzer], good_engine: Path, clip_sets: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = Receiver().start()
    analyzer = analyze(good_engine, monitor_cooldown_s=0, monitor_probes=2,
                       alert_webhook=receiver.url)
    clips = clip_sets["traffic"][:8]
    healthy = _run(analyzer, clips[:1])
    guarded = analyzer.runtime.classifier.served.runner
    real_infer = guarded.primary._infer
    fault = {"on": True}

    def failing(feed: Any) -> Any:
        if fault["on"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_infer(feed)

    monkeypatch.setattr(guarded.primary, "_infer", failing)
    during = _run(analyzer, clips[:2])
    assert [r["path"] for r in during] == ["fallback", "fallback"]
    assert during[0]["labels"] == healthy[0]["labels"]  # the video in flight is not lost

    fault["on"] = False  # the fault is fixed: probes pass, the engine is restored
    after = _run(analyzer, clips[2:6])
    # probing: the fallback answers until the probes have agreed (within the first video,
    # which has more batches than probes, the engine may take over part way)
    assert after[0]["path"] in ("fallback", "engine+fallback")
    assert after[-1] == {**after[-1], "path": "engine", "active": False}
    health = analyzer.runtime.monitor.tasks["classify"].snapshot()
    assert health["state"] == "healthy" and health["incidents"] == 1 and health["errors"] == 1
    events = [a.event for a in analyzer.runtime.monitor.alerter.sent]
    assert events == ["degraded", "recovered"]
    deadline = time.monotonic() + 10
    while len(receiver.events) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    receiver.stop()
    assert [e["event"] for e in receiver.events] == ["task.degraded", "task.recovered"]
    # the device's error, translated where the engine runs
    assert "DeviceError: the onnxruntime runner: the device failed (CUDA error: an illegal " \
        "memory access" in receiver.events[0]["reason"]


def test_broken_ocr_recognizer_falls_back_and_captions_are_still_read(
    analyze: Callable[..., Analyzer], truth: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    analyzer = analyze(None)
    _, served_rec = analyzer.runtime.ocr_models
    rec = served_rec.runner

    def garbage(feed: Any) -> Any:
        raise RuntimeError("engine produced an invalid plan")

    monkeypatch.setattr(rec.primary, "_infer", garbage)
    report = analyzer.analyze(SAMPLE, force=True).report
    assert [e.text for e in report.ocr] == [c["text"] for c in truth["captions"]]
    assert report.engines["ocr"].path == "engine+fallback"  # the detector kept its engine
    assert report.engines["ocr"].fallback_active
    assert report.engines["classify"].path == "engine"
    alerts = analyzer.runtime.monitor.alerter.sent
    assert [(a.task, a.event) for a in alerts] == [("ocr_rec", "degraded")]
