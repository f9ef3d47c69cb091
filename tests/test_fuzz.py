"""A corpus of mutated containers (bit flips, flips in the index, truncations, swapped
boxes, wrong box sizes, zeroed and repeated ranges) made from a real clip: no crash, no
hang, memory bounded (no mutant takes the process's peak far above what the intact clip
took), one clear line for each file refused, the database unchanged by it."""

from __future__ import annotations

from pathlib import Path

import fuzz_media
import phoneclips as pc
import pytest

PER_FILE_S = 60.0  # a file analyzed for longer than this counts as a hang
# what the mutants may add to the peak memory of the intact clip's analysis (measured on
# the 2-core machine, 2026-12-01: 1,655 MB after the intact clip, 1,883 MB after all 42;
# the peak itself depends on the machine: 3,045 MB on CI's)
MAX_GROWTH_MB = 600


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The intact clip, then its mutants."""
    folder = tmp_path_factory.mktemp("fuzz")
    speech, _ = pc.speech(readings=1)
    source = pc.write(folder / "source.mp4",
                      pc.portrait(3.0, 30, (360, 640), (pc.Caption(("坏文件", "Broken file"),
                                                                   0, 9),)),
                      pc.Variant(audio=(pc.AudioTrack(speech[:48000]),)))
    return [source, *fuzz_media.make(source, folder / "mutants", count=42, seed=2026)]


def test_mutated_files_are_analyzed_or_refused_with_one_clear_line(
        corpus: list[Path], cache_dir: Path, tmp_path: Path) -> None:
    results = fuzz_media.run(corpus, tmp_path / "fuzz.db", cache_dir, PER_FILE_S)
    assert len(results) == len(corpus)
    intact, mutants = results[0], results[1:]
    assert intact["result"] == "analyzed" and intact["stored"] == 1, intact
    bad = [r for r in results if r["result"] not in ("analyzed", "refused")]
    assert not bad, bad  # no crash, hang, internal error or non-input error
    for r in mutants:
        if r["result"] == "refused":
            message = r["message"]
            assert "\n" not in message and message.startswith(f"{r['file']}: "), r
            assert r["stored"] == 0, r  # the database is as it was
        else:
            assert r["stored"] == 1, r
    # a process's peak so far (a child that hangs is replaced by one that loads the models
    # again, which the intact clip's peak covers)
    assert max(r["max_rss_mb"] for r in mutants) < intact["max_rss_mb"] + MAX_GROWTH_MB
    kinds = {r["result"] for r in mutants}
    assert kinds == {"analyzed", "refused"}, kinds  # the corpus exercises both
