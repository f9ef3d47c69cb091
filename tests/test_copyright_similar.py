"""Copyright matching and similar videos, on re-encoded copies and unrelated clips."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, clipgen


@pytest.fixture(scope="module")
def library(run_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    db = tmp_path_factory.mktemp("lib") / "lib.db"
    added = run_cli("references", "add", str(SAMPLE), "--title", "Song A", db=db)
    assert added.code == 0, added.stderr
    return db, int(added.stdout.strip())


def test_adding_the_same_reference_twice_keeps_one(run_cli: Any, library: tuple[Path, int]) -> None:
    db, ref_id = library
    again = run_cli("references", "add", str(SAMPLE), "--title", "Song A again", db=db)
    assert again.code == 0 and int(again.stdout.strip()) == ref_id
    assert "already in the library" in again.stderr
    listed = run_cli("references", "list", db=db)
    assert listed.stdout.count("\n") == 1 and "Song A" in listed.stdout


def test_reencoded_copy_is_matched(
    run_cli: Any, library: tuple[Path, int], reencoded_copy: Path
) -> None:
    db, ref_id = library
    result = run_cli("analyze", str(reencoded_copy), "--json", db=db)
    assert result.code == 0, result.stderr
    matches = result.json()["copyright"]
    assert matches and matches[0]["reference_id"] == ref_id and matches[0]["title"] == "Song A"
    best = matches[0]
    assert best["score"] >= 0.8
    assert best["video_score"] >= 0.8 and best["audio_score"] >= 0.6
    assert best["query_start_s"] == pytest.approx(best["reference_start_s"], abs=0.6)
    assert best["duration_s"] >= 8.0


def test_trimmed_copy_is_matched_at_its_offset(
    run_cli: Any, library: tuple[Path, int], clips: Path
) -> None:
    """A copy that starts 4 s into the reference, smaller and re-encoded."""
    db, ref_id = library
    trimmed = clipgen.transcode(SAMPLE, clips / "trimmed.mp4", 540, 960, crf=34, start_s=4.0)
    result = run_cli("analyze", str(trimmed), "--json", db=db)
    assert result.code == 0, result.stderr
    best = result.json()["copyright"][0]
    assert best["reference_id"] == ref_id
    assert best["query_start_s"] == pytest.approx(0.0, abs=0.6)
    assert best["reference_start_s"] == pytest.approx(4.0, abs=0.6)
    assert best["duration_s"] >= 6.0


def test_different_clip_is_not_matched(
    run_cli: Any, library: tuple[Path, int], different_clip: Path
) -> None:
    db, _ = library
    result = run_cli("analyze", str(different_clip), "--json", db=db)
    assert result.code == 0, result.stderr
    assert result.json()["copyright"] == []


def test_similar_finds_the_original_of_a_copy(
    run_cli: Any, tmp_path: Path, reencoded_copy: Path, different_clip: Path
) -> None:
    db = tmp_path / "similar.db"
    ids = {}
    for name, clip in (("original", SAMPLE), ("other", different_clip), ("copy", reencoded_copy)):
        result = run_cli("analyze", str(clip), "--json", db=db)
        assert result.code == 0, result.stderr
        ids[name] = result.json()["video"]["id"]
        if name == "copy":
            assert result.json()["similar"][0]["video_id"] == ids["original"]
    found = run_cli("similar", ids["copy"], "--json", db=db)
    assert found.code == 0, found.stderr
    ranked = [s["video_id"] for s in found.json()]
    assert ranked == [ids["original"], ids["other"]]
    human = run_cli("similar", ids["copy"], db=db)
    rows = [ln for ln in human.stdout.splitlines() if ids["original"] in ln or ids["other"] in ln]
    assert ids["original"] in rows[0] and ids["other"] in rows[1]


def test_a_reference_stored_before_descriptors_and_landmarks_still_matches(
    run_cli: Any, tmp_path: Path, reencoded_copy: Path
) -> None:
    """A library written before copy descriptors and audio landmarks existed has PDQ
    hashes and a Chromaprint fingerprint only: its references are matched on them."""
    db = tmp_path / "old.db"
    added = run_cli("references", "add", str(SAMPLE), "--title", "Song A", db=db)
    assert added.code == 0, added.stderr
    with sqlite3.connect(db) as conn:
        for table in ("copyright_reference_descriptors", "copyright_reference_landmarks",
                      "copyright_audio_hashes"):
            conn.execute(f"DELETE FROM {table}")
    result = run_cli("analyze", str(reencoded_copy), "--json", db=db)
    assert result.code == 0, result.stderr
    best = result.json()["copyright"][0]
    assert best["title"] == "Song A" and best["video_score"] >= 0.8
    assert best["audio_score"] >= 0.6
