"""One analysis, start to finish: decode, run every task, aggregate, store.

Two lanes run at once on the CPU: speech (audio decode, Whisper, Chromaprint,
then the sentiment models' warm-up) and pictures (frame decode, classifier, OCR,
PDQ, then the text encoder's warm-up).
Everything that needs both comes after, and the database is written once, in
one transaction, at the very end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelscope.config import Settings
from reelscope.digest import sha256_file
from reelscope.pipeline.models import Models
from reelscope.report import Report, Transcript, VideoInfo
from reelscope.store.store import ReferenceInfo, Store
from reelscope.tasks import sentiment
from reelscope.tasks.classify import video_labels, visual_embedding
from reelscope.tasks.copyright import match_library
from reelscope.tasks.fingerprint import (
    Fingerprint,
    audio_fingerprint,
    fingerprint,
    frame_hashes,
)
from reelscope.tasks.ocr import merge_captions, read_frames
from reelscope.video.decode import Frame, decode_audio, sample_frames
from reelscope.video.media import Limits, MediaInfo, check_file, probe

ProgressFn = Callable[[str], None]
STAGES = (
    "audio_fingerprint",
    "decode",
    "labels",
    "ocr",
    "asr",
    "fingerprint",
    "sentiment",
    "embed",
    "copyright",
    "store",
)


@dataclass(frozen=True)
class Outcome:
    report: Report
    cached: bool  # True when the stored report of the same content was returned


class Analyzer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        models: Models | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models or Models(settings)
        self.progress = progress or (lambda stage: None)
        self.limits = Limits.of(settings)

    def analyze(
        self,
        path: Path,
        force: bool = False,
        on_frames: Callable[[list[Frame]], None] | None = None,
        filename: str | None = None,
    ) -> Outcome:
        """Analyze ``path`` (or return the stored report of the same content).

        ``on_frames`` receives the sampled frames once they are decoded;
        ``filename`` is the name reported (default: the file's own).
        """
        start = time.perf_counter()
        check_file(path, self.limits)
        sha = sha256_file(path)
        if not force:
            stored = self.store.find_by_sha256(sha)
            if stored is not None:
                return Outcome(stored, cached=True)
        info = probe(path, self.limits)
        timings: dict[str, float] = {}
        step = 1.0 / self.settings.sample_fps

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech") as lane:
            speech = lane.submit(self._speech_lane, info, timings)
            frames = self._decode_frames(info, timings)
            if on_frames is not None:
                on_frames(frames)
            with self._timed("labels", timings):
                classified = self.models.classifier.run(frames)
                labels = video_labels(classified, step)
            with self._timed("ocr", timings):
                self.models.ocr.begin()
                ocr = merge_captions(
                    read_frames(
                        self.models.ocr,
                        frames,
                        self.settings.ocr_change_threshold,
                        self.settings.ocr_refresh_s,
                    ),
                    step,
                )
            with self._timed("fingerprint", timings):
                hashes, quality = frame_hashes(frames)
            _ = self.models.text_encoder
            transcript, audio_fp, audio_item_s = speech.result()
        fp = Fingerprint(step, hashes, quality, audio_fp, audio_item_s)
        with self._timed("sentiment", timings):
            feeling = sentiment.analyze(
                [
                    ("transcript", [s.text for s in transcript.segments]),
                    ("ocr", [e.text for e in ocr]),
                ]
            )
        with self._timed("embed", timings):
            visual = visual_embedding(classified)
            text_vec = self.models.text_encoder.encode(
                " ".join([transcript.text, *(e.text for e in ocr)])
            )
        with self._timed("copyright", timings):
            matches = match_library(fp, self.store.library(), self.settings.copyright_min_score)
            similar = self.store.similar(
                visual, text_vec, self.settings.similar_k, exclude=sha[:16]
            )
        report = Report(
            video=_video_info(info, sha, filename or path.name),
            labels=labels,
            ocr=ocr,
            transcript=transcript,
            sentiment=feeling,
            copyright=matches,
            similar=similar,
            timings_s=timings,
            engines={
                "classify": self.models.classifier.engine_use(classified),
                "ocr": self.models.ocr.engine_use(),
                "asr": self.models.speech.engine,
                "text_embed": self.models.text_encoder.engine,
            },
        )
        with self._timed("store", timings):
            timings["total"] = time.perf_counter() - start
            self.store.save(report, visual, text_vec)
        return Outcome(report, cached=False)

    def add_reference(self, path: Path, title: str) -> ReferenceInfo:
        """Fingerprint ``path`` into the copyright library (same content: same id)."""
        check_file(path, self.limits)
        sha = sha256_file(path)
        info = probe(path, self.limits)
        timings: dict[str, float] = {}
        frames = self._decode_frames(info, timings)
        with self._timed("fingerprint", timings):
            fp: Fingerprint = fingerprint(
                frames, decode_audio(info), 1.0 / self.settings.sample_fps
            )
        with self._timed("store", timings):
            return self.store.add_reference(sha, title, info.duration_s, fp)

    # lanes and helpers --------------------------------------------------------

    def _speech_lane(
        self, info: MediaInfo, timings: dict[str, float]
    ) -> tuple[Transcript, np.ndarray, float]:
        with self._timed("asr", timings):
            audio = decode_audio(info)
            transcript = self.models.speech.transcribe(audio)
        with self._timed("audio_fingerprint", timings):
            items, item_s = audio_fingerprint(audio)
        _ = self.models.sentiment_ready
        return transcript, items, item_s

    def _decode_frames(self, info: MediaInfo, timings: dict[str, float]) -> list[Frame]:
        with self._timed("decode", timings):
            return list(sample_frames(info, self.settings.sample_fps))

    @contextmanager
    def _timed(self, stage: str, timings: dict[str, float]) -> Iterator[None]:
        self.progress(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def _video_info(info: MediaInfo, sha: str, filename: str) -> VideoInfo:
    return VideoInfo(
        id=sha[:16],
        sha256=sha,
        duration_s=info.duration_s,
        width=info.width,
        height=info.height,
        fps=info.fps,
        has_audio=info.has_audio,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        filename=filename,
    )
