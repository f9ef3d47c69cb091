"""``reelscope batch``: a library of videos analyzed and stored, each content once."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE
from test_bad_input import _truncated, _truncated_faststart

from reelscope.pipeline.batch import collect


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, different_clip: Path) -> Path:
    """A folder as users have them: two clips, the first again under another name, two
    broken files (one cut before its index, one that opens and then runs out of frames),
    and a file that is not a video."""
    folder = tmp_path_factory.mktemp("library")
    shutil.copy(SAMPLE, folder / "a-cat.mp4")
    shutil.copy(different_clip, folder / "b-stars.mp4")
    sub = folder / "later"
    sub.mkdir()
    shutil.copy(SAMPLE, sub / "c-cat-again.MP4")
    _truncated(folder / "d-cut.mp4")
    scratch = tmp_path_factory.mktemp("scratch")  # the helper leaves a whole copy beside
    shutil.move(_truncated_faststart(scratch / "e-cut-faststart.mp4"), folder)
    (folder / "notes.txt").write_text("not a video")
    return folder


def _stored(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, report_json FROM videos").fetchall()
    return {r[0]: json.loads(r[1]) for r in rows}


def test_a_library_is_analyzed_once_per_content_and_a_rerun_skips_it(
        run_cli: Any, library: Path, tmp_path: Path, truth: dict[str, Any]) -> None:
    db = tmp_path / "library.db"
    result = run_cli("batch", str(library), "--json", db=db)
    assert result.code == 1, result.stderr  # two videos failed
    summary = json.loads(result.stdout)
    stored = _stored(db)
    assert sorted(summary["done"]) == sorted(stored)  # two reports, each content once
    assert len(stored) == 2
    by_name = {r["video"]["filename"]: r for r in stored.values()}
    cat, stars = by_name["a-cat.mp4"], by_name["b-stars.mp4"]
    assert {e["text"] for e in cat["ocr"]} == {c["text"] for c in truth["captions"]}
    assert "Stars at night" in {e["text"] for e in stars["ocr"]}
    assert "rain" in stars["transcript"]["text"]
    # the same content under another name is not analyzed again: skipped, with its id
    assert summary["skipped"] == [cat["video"]["id"]]
    failed = {Path(f["path"]).name: f["error"] for f in summary["failed"]}
    assert set(failed) == {"d-cut.mp4", "e-cut-faststart.mp4"}
    assert "truncated or damaged" in failed["d-cut.mp4"]
    # it opens, then its frames run out: read alone, "truncated"; decoded beside another
    # video (fewer threads), the decoder may say "damaged" first
    assert re.search("truncated|damaged file", failed["e-cut-faststart.mp4"])

    # again, from a list of paths: everything is stored already
    listing = tmp_path / "list.txt"
    listing.write_text("# the library again\n\n" + "\n".join(
        str(p.relative_to(library)) for p in (library / "a-cat.mp4", library / "b-stars.mp4",
                                             library / "later" / "c-cat-again.MP4")) + "\n")
    shutil.copy(listing, library / "list.txt")
    again = run_cli("batch", f"@{library / 'list.txt'}", db=db)
    assert again.code == 0, again.stderr
    assert again.stdout.strip() == "0 done, 3 already stored, 0 failed"
    assert _stored(db) == stored


def test_videos_listed_by_uri_are_read_through_fsspec(
        run_cli: Any, tmp_path: Path, truth: dict[str, Any]) -> None:
    listing = tmp_path / "uris.txt"
    listing.write_text(f"{SAMPLE.resolve().as_uri()}\n"
                       f"{(tmp_path / 'gone.mp4').as_uri()}\n"
                       "nosuch://bucket/clip.mp4\n")
    db = tmp_path / "uris.db"
    result = run_cli("batch", f"@{listing}", "--json", db=db)
    assert result.code == 1, result.stderr
    summary = json.loads(result.stdout)
    stored = _stored(db)
    assert list(stored) == summary["done"]
    report = next(iter(stored.values()))
    assert report["video"]["filename"] == "sample.mp4"  # the URI's name, not the copy's
    assert {e["text"] for e in report["ocr"]} == {c["text"] for c in truth["captions"]}
    failed = {f["path"]: f["error"] for f in summary["failed"]}
    assert set(failed) == {(tmp_path / "gone.mp4").as_uri(), "nosuch://bucket/clip.mp4"}
    for uri, error in failed.items():
        assert error.startswith(f"{uri}: cannot read it: "), error


def test_nothing_to_analyze_is_one_clear_error(run_cli: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("batch", str(empty), db=tmp_path / "x.db")
    assert result.code == 2
    assert result.stderr.strip() == f"error: no videos found in {empty}"
    missing = run_cli("batch", f"@{tmp_path / 'nope.txt'}", db=tmp_path / "x.db")
    assert missing.code == 2
    assert "cannot read the list of videos" in missing.stderr
    assert not (tmp_path / "x.db").exists() or not _stored(tmp_path / "x.db")


def test_collect_keeps_order_and_each_path_once(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    for name in ("b.mov", "a.mp4", "c.txt"):
        (tmp_path / "v" / name).write_bytes(b"x")
    listing = tmp_path / "l.txt"
    listing.write_text("v/a.mp4\n# comment\n/elsewhere/z.mp4\n")
    got = collect([str(tmp_path / "v"), f"@{listing}", str(tmp_path / "v" / "b.mov")])
    assert got == [str(tmp_path / "v" / "a.mp4"), str(tmp_path / "v" / "b.mov"),
                   "/elsewhere/z.mp4"]
