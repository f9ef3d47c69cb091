"""Every kind of bad input: one clear line on stderr, a non-zero exit, the database unchanged."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import SAMPLE, clipgen, db_dump, faststart_copy
from PIL import Image


@pytest.fixture(scope="module")
def seeded_db(run_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database that already holds a reference, so 'unchanged' means something."""
    db = tmp_path_factory.mktemp("seed") / "seed.db"
    added = run_cli("references", "add", str(SAMPLE), "--title", "Song A", db=db)
    assert added.code == 0, added.stderr
    return db


@pytest.fixture
def db(seeded_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "db.sqlite"
    shutil.copy(seeded_db, copy)
    return copy


def _text(p: Path) -> Path:
    p.write_text("these are not the frames you are looking for\n" * 20)
    return p


def _png(p: Path) -> Path:
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(p, format="PNG")
    return p


def _pdf(p: Path) -> Path:
    p.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _truncated(p: Path) -> Path:
    data = SAMPLE.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _truncated_faststart(p: Path) -> Path:
    """Half of a 'fast start' MP4 (index first): it opens, then the frames run out."""
    data = faststart_copy(SAMPLE, p.with_name("whole-faststart.mp4")).read_bytes()
    assert data.find(b"moov") < 64  # the index is at the front
    p.write_bytes(data[: len(data) // 2])
    return p


def _corrupt(p: Path) -> Path:
    data = bytearray(SAMPLE.read_bytes())
    moov = data.find(b"moov")
    data[moov - 4 : moov + 400] = bytes(range(256)) + bytes(148)  # a damaged header box
    p.write_bytes(bytes(data))
    return p


def _audio_only(p: Path) -> Path:
    rate = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate * 2) / rate) * 32767).astype(np.int16)
    with av.open(str(p), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return p


CASES: list[tuple[str, Callable[[Path], Path], str, str]] = [
    ("text", _text, "notes.mp4", "not a video file (it looks like a text file)"),
    ("image", _png, "photo.mp4", "not a video file (it looks like a PNG image)"),
    ("pdf", _pdf, "doc.mp4", "not a video file (it looks like a PDF document)"),
    ("empty", _empty, "empty.mp4", "the file is empty (0 bytes)"),
    ("truncated", _truncated, "cut.mp4", "the file is truncated or damaged"),
    ("truncated fast start", _truncated_faststart, "cut2.mp4", "the file is truncated"),
    ("corrupt", _corrupt, "broken.mp4", "the file is truncated or damaged"),
    ("audio only", _audio_only, "song.m4a", "has no video stream (audio only)"),
]


def _assert_one_clear_error(result: Any, expected: str) -> None:
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("name", "make", "filename", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_file(
    run_cli: Any,
    db: Path,
    tmp_path: Path,
    name: str,
    make: Callable[[Path], Path],
    filename: str,
    expected: str,
) -> None:
    before = db_dump(db)
    path = make(tmp_path / filename)
    result = run_cli("analyze", str(path), "--json", db=db)
    _assert_one_clear_error(result, expected)
    assert db_dump(db) == before


def test_missing_path(run_cli: Any, db: Path, tmp_path: Path) -> None:
    before = db_dump(db)
    result = run_cli("analyze", str(tmp_path / "nope.mp4"), db=db)
    _assert_one_clear_error(result, "nope.mp4: no such file")
    assert db_dump(db) == before


def test_directory(run_cli: Any, db: Path, tmp_path: Path) -> None:
    before = db_dump(db)
    result = run_cli("analyze", str(tmp_path), db=db)
    _assert_one_clear_error(result, "is a directory, not a video file")
    assert db_dump(db) == before


def test_over_the_duration_limit(run_cli: Any, db: Path) -> None:
    before = db_dump(db)
    result = run_cli("analyze", str(SAMPLE), "--max-duration-s", "5", db=db)
    _assert_one_clear_error(result, "video is 12.0 s long, over the 5 s limit")
    assert db_dump(db) == before


def test_over_the_file_size_limit(run_cli: Any, db: Path) -> None:
    before = db_dump(db)
    result = run_cli("analyze", str(SAMPLE), db=db, env={"REELSCOPE_MAX_FILE_MB": "0.1"})
    _assert_one_clear_error(result, "over the 0.1 MB limit")
    assert db_dump(db) == before


def test_bad_reference_leaves_library_unchanged(run_cli: Any, db: Path, tmp_path: Path) -> None:
    before = db_dump(db)
    result = run_cli(
        "references", "add", str(_truncated(tmp_path / "cut.mp4")), "--title", "X", db=db
    )
    _assert_one_clear_error(result, "truncated or damaged")
    assert db_dump(db) == before


def test_debug_variable_shows_the_traceback(run_cli: Any, db: Path, tmp_path: Path) -> None:
    result = run_cli(
        "analyze", str(_empty(tmp_path / "e.mp4")), db=db, env={"REELSCOPE_DEBUG": "1"}
    )
    assert result.code != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("silent_track", [False, True], ids=["no audio stream", "silent audio"])
def test_video_without_sound_is_analyzed(
    run_cli: Any, db: Path, tmp_path: Path, silent_track: bool
) -> None:
    from skimage import data

    spec = clipgen.ClipSpec(
        scenes=(clipgen.Scene(data.chelsea(), 3.0, ("没有声音", "No sound")),),
        silent_audio=silent_track,
    )
    clip = clipgen.write_clip(tmp_path / "silent.mp4", spec)
    result = run_cli("analyze", str(clip), "--json", db=db)
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["video"]["has_audio"] is silent_track
    assert report["transcript"] == {"language": "", "text": "", "segments": []}
    assert {e["text"] for e in report["ocr"]} >= {"没有声音", "No sound"}


def test_invalid_setting_is_a_clear_error(run_cli: Any, db: Path) -> None:
    before = db_dump(db)
    result = run_cli("analyze", str(SAMPLE), db=db, env={"REELSCOPE_SAMPLE_FPS": "fast"})
    _assert_one_clear_error(result, "REELSCOPE_SAMPLE_FPS='fast' is not a valid float")
    assert db_dump(db) == before


def test_time_ranges_never_pass_the_end_of_a_tenth_of_a_second_clip(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """One sampled frame: its label and caption last until the video ends (0.1 s), not a
    whole sampling step (0.5 s) past their frame."""
    from skimage import data

    spec = clipgen.ClipSpec(scenes=(clipgen.Scene(data.chelsea(), 0.1, ("短片", "Short")),))
    clip = clipgen.write_clip(tmp_path / "tenth.mp4", spec)
    result = run_cli("analyze", str(clip), "--json", db=db)
    assert result.code == 0, result.stderr
    report = result.json()
    duration = report["video"]["duration_s"]
    assert duration == pytest.approx(0.1, abs=0.04)
    assert report["labels"] and report["ocr"]
    assert any("cat" in label["label"] for label in report["labels"])
    for entry in (*report["labels"], *report["ocr"]):
        assert 0 <= entry["start_s"] < entry["end_s"] <= duration, entry
