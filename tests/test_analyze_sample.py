"""The sample clip analyzed with the real models, through the real command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, CliResult
from textmetrics import cer, wer

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def analyzed(run_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliResult]:
    db = tmp_path_factory.mktemp("db") / "sample.db"
    return db, run_cli("analyze", str(SAMPLE), "--json", db=db)


@pytest.fixture(scope="module")
def report(analyzed: tuple[Path, CliResult]) -> dict[str, Any]:
    _, result = analyzed
    assert result.code == 0, result.stderr
    return result.json()


def test_json_output_is_the_report_and_nothing_else(report: dict[str, Any]) -> None:
    for key in (
        "video",
        "labels",
        "ocr",
        "transcript",
        "sentiment",
        "copyright",
        "similar",
        "timings_s",
        "engines",
    ):
        assert key in report
    video = report["video"]
    assert (video["width"], video["height"], video["has_audio"]) == (720, 1280, True)
    assert video["duration_s"] == pytest.approx(12.0, abs=0.1)
    assert report["engines"]["classify"]["backend"] == "onnxruntime"


def test_every_caption_is_read(report: dict[str, Any], truth: dict[str, Any]) -> None:
    for caption in truth["captions"]:
        overlapping = [
            e
            for e in report["ocr"]
            if e["start_s"] < caption["end_s"] and e["end_s"] > caption["start_s"]
        ]
        best = min((cer(caption["text"], e["text"]) for e in overlapping), default=1.0)
        assert best <= 0.10, f"caption {caption['text']!r} not read; got {overlapping}"


@pytest.mark.parametrize("mean, std", [(None, None),  # rapidocr's own: one scale
                                       ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
def test_the_detectors_input_is_rapidocrs_own(mean: list[float] | None,
                                              std: list[float] | None) -> None:
    """reelscope's one-pass normalization of a frame for the text detector gives what
    rapidocr's own preprocessing gives, value for value (a frame of the sample)."""
    import cv2
    import numpy as np
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    from reelscope.tasks.ocr import DetInput

    video = cv2.VideoCapture(str(SAMPLE))
    video.set(cv2.CAP_PROP_POS_FRAMES, 45)
    ok, bgr = video.read()
    video.release()
    assert ok
    want = DetPreProcess(960, "max", mean, std)(bgr)
    got = DetInput(960, "max", mean, std)(bgr)
    assert want is not None and got is not None
    assert got.shape == want.shape == (1, 3, 960, 544) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) < 1e-5


def test_same_caption_across_frames_is_one_entry(report: dict[str, Any]) -> None:
    texts = [e["text"] for e in report["ocr"]]
    assert len(texts) == len(set(texts)), texts
    cat = next(e for e in report["ocr"] if e["text"] == "This is my cat")
    assert cat["start_s"] == pytest.approx(0.0) and cat["end_s"] == pytest.approx(3.0)


def test_speech_is_transcribed(report: dict[str, Any], truth: dict[str, Any]) -> None:
    transcript = report["transcript"]
    assert transcript["language"] == "en"
    assert wer(truth["speech"], transcript["text"]) <= 0.20, transcript["text"]
    assert transcript["segments"] and transcript["segments"][0]["start_s"] < 1.0


def test_cat_photo_labelled_as_a_cat(report: dict[str, Any]) -> None:
    top5 = report["labels"][:5]
    cats = [lb for lb in top5 if lb["label"] in CAT_CLASSES]
    assert cats, f"no cat class in the top 5 labels: {[lb['label'] for lb in top5]}"
    assert cats[0]["start_s"] < 3.0 and cats[0]["end_s"] <= 3.5


def test_sentiment_is_positive(report: dict[str, Any]) -> None:
    assert report["sentiment"]["label"] == "positive"
    assert report["sentiment"]["score"] > 0.05
    assert {s["source"] for s in report["sentiment"]["sources"]} == {"transcript", "ocr"}


def test_same_file_again_returns_the_stored_report(
    run_cli: Any, analyzed: tuple[Path, CliResult], report: dict[str, Any]
) -> None:
    db, _ = analyzed
    again = run_cli("analyze", str(SAMPLE), db=db)
    assert again.code == 0, again.stderr
    assert "already analyzed" in again.stdout
    assert "This is my cat" in again.stdout


def test_show_prints_the_stored_report(
    run_cli: Any, analyzed: tuple[Path, CliResult], report: dict[str, Any]
) -> None:
    db, _ = analyzed
    shown = run_cli("show", report["video"]["id"], "--json", db=db)
    assert shown.code == 0, shown.stderr
    assert shown.json()["ocr"] == report["ocr"]
    human = run_cli("show", report["video"]["id"], db=db)
    assert "我们非常开心" in human.stdout and "Hello everyone" in human.stdout


def test_show_unknown_id_is_a_clear_error(run_cli: Any, analyzed: tuple[Path, CliResult]) -> None:
    db, _ = analyzed
    result = run_cli("show", "0000000000000000", db=db)
    assert result.code == 1
    assert result.stderr.strip() == "error: no stored video with id '0000000000000000'"
