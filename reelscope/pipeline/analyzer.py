"""One analysis, start to finish: decode, run every task, aggregate, store.

Two lanes run at once: speech (audio decode, Whisper, Chromaprint, then the
sentiment models' warm-up) and pictures (frame decode, then the text encoder's
warm-up). Each sampled frame goes, as it is decoded, to the classifier (a batch
at a time), to the copy descriptors where there is a copyright library (through the
same served model), to OCR and to the frame hashes (each in a thread of its own, fed
through a short queue), and to the caller's ``on_frame``; no list of every frame is
kept, so a long video takes no more memory than a short one.
Everything that needs both lanes comes after, and the database is written once,
in one transaction, at the very end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from reelscope import malloc
from reelscope.config import Settings
from reelscope.digest import sha256_file
from reelscope.errors import ConfigError
from reelscope.pipeline.runtime import Runtime
from reelscope.report import (
    CopyrightMatch,
    EngineUse,
    Report,
    SimilarVideo,
    Transcript,
    VideoInfo,
)
from reelscope.store.store import ReferenceInfo, Store
from reelscope.tasks import sentiment
from reelscope.tasks.classify import video_labels, visual_embedding
from reelscope.tasks.copydetect import Describer
from reelscope.tasks.copyright import match_library
from reelscope.tasks.fingerprint import (
    Fingerprint,
    FrameHasher,
    audio_fingerprint,
    frame_hashes,
)
from reelscope.tasks.landmarks import EMPTY as EMPTY_LANDMARKS
from reelscope.tasks.landmarks import Landmarks, landmarks
from reelscope.tasks.ocr import (
    FrameText,
    TextLine,
    merge_captions,
    read_frames,
    read_frames_concurrently,
)
from reelscope.video.decode import Frame, decode_audio
from reelscope.video.media import Checked, Limits, MediaInfo, check_file, probe
from reelscope.video.nvdec import Decoding

ProgressFn = Callable[[str], None]
T = TypeVar("T")
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
        store: Store | None,
        runtime: Runtime,
        progress: ProgressFn | None = None,
        overlap: bool = True,
    ) -> None:
        """Analyses with ``runtime``'s models, stored in ``store`` (None: nothing is read
        from or written to a database; no copyright or similar-video matches then).
        ``overlap=False`` runs the speech lane before the pictures, one task after another
        (the naive baseline of the benchmarks)."""
        self.overlap = overlap
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.progress = progress or (lambda stage: None)
        self.limits = Limits.of(settings)

    def analyze(
        self,
        path: Path,
        force: bool = False,
        on_frame: Callable[[Frame], None] | None = None,
        filename: str | None = None,
        checked: Checked | None = None,
    ) -> Outcome:
        """Analyze ``path`` (or return the stored report of the same content).

        ``on_frame`` receives each sampled frame as it is decoded (in any order when the
        video is decoded in segments); ``filename`` is the name reported (default: the
        file's own); ``checked``: the file's hash and probe where they are known already
        (an upload's), so that it is not read and probed again.
        """
        with _IN_FLIGHT.entered() as in_flight:
            return self._analyze(path, force, on_frame, filename,
                                 self._parallelism(in_flight), checked)

    def _parallelism(self, in_flight: int) -> _Parallelism:
        """Decoder segments and threads and OCR readers for one of ``in_flight`` videos.
        Splitting a video's work pays when it is the only one in this process; with
        several, they share the cores (``--threads``)."""
        cores = self.settings.cpu_threads
        alone = in_flight == 1
        return _Parallelism(
            decode_segments=self.settings.decode_segments or (min(8, cores) if alone else 1),
            decode_threads=0 if alone else max(1, cores // in_flight),
            ocr_readers=self.settings.gpu_ocr_readers or (4 if alone else 1),
        )

    def _analyze(self, path: Path, force: bool, on_frame: Callable[[Frame], None] | None,
                 filename: str | None, parallel: _Parallelism,
                 checked: Checked | None = None) -> Outcome:
        start = time.perf_counter()
        check_file(path, self.limits)
        sha = checked.sha256 if checked is not None else sha256_file(path)
        if not force and self.store is not None:
            stored = self.store.find_by_sha256(sha)
            if stored is not None:
                return Outcome(stored, cached=True)
        info = checked.info if checked is not None else probe(path, self.limits)
        timings: dict[str, float] = {}
        step = 1.0 / self.settings.sample_fps

        # copy descriptors and audio landmarks serve only matching the library: none
        # without references
        matching = self.store is not None and self.store.has_references()
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="lane") as lanes:
            speech = lanes.submit(self._speech_lane, info, timings, matching)
            if not self.overlap:
                speech.result()
            # overlap=False: each task reads the frames after decoding, one after another
            lane: Callable[..., FrameLane | DeferredLane] = (
                partial(FrameLane, lanes) if self.overlap else DeferredLane)
            job = self.runtime.classifier.start()
            copies = Describer(self.runtime.classifier, step, inner=True)
            text_lane = lane(partial(self._read_text, readers=parallel.ocr_readers))
            hash_lane = lane(frame_hashes)
            consumers: list[Callable[[Frame], None]] = [job.add, text_lane.add, hash_lane.add]
            if matching:
                consumers.append(copies.add)
            if on_frame is not None:
                consumers.append(on_frame)
            decoding = self._decoding(info, parallel)
            try:
                last_s = self._decode_frames(decoding, timings, consumers)
            finally:
                text_lane.close()
                hash_lane.close()
            # a container may declare less than its last frame shows (seen with VFR files)
            duration = max(info.duration_s, last_s + (1 / info.fps if info.fps > 0 else 0))
            with self._timed("labels", timings):
                classified = job.result()
                labels = video_labels(classified, step, duration)
            with self._timed("ocr", timings):
                texts, ocr_engine = text_lane.result()
                ocr = merge_captions(texts, step, duration)
            with self._timed("fingerprint", timings):
                hashes, quality = hash_lane.result()
            _ = self.runtime.text_encoder
            transcript, audio_fp, audio_item_s, heard = speech.result()
        fp = Fingerprint(step, hashes, quality, audio_fp, audio_item_s)
        with self._timed("sentiment", timings):
            feeling = sentiment.analyze(
                [
                    ("transcript", [s.text for s in transcript.segments]),
                    ("ocr", [e.text for e in ocr]),
                ],
                self.runtime.text_encoder.encode,
            )
        with self._timed("embed", timings):
            visual = visual_embedding(classified)
            text_vec = self.runtime.text_encoder.encode(
                " ".join([transcript.text, *(e.text for e in ocr)])
            )
        matches: tuple[CopyrightMatch, ...] = ()
        similar: tuple[SimilarVideo, ...] = ()
        if self.store is not None:
            with self._timed("copyright", timings):
                if matching:
                    described = copies.result()
                    matches = match_library(fp, described, heard,
                                            self.store.library(described, heard),
                                            self.settings.copyright_min_score)
                similar = self.store.similar(
                    visual, text_vec, self.settings.similar_k, exclude=sha[:16]
                )
        report = Report(
            video=_video_info(info, sha, filename or path.name, duration),
            labels=labels,
            ocr=ocr,
            transcript=transcript,
            sentiment=feeling,
            copyright=matches,
            similar=similar,
            timings_s=timings,
            engines={
                "decode": decoding.use(),
                "classify": self.runtime.classifier.engine_use(classified),
                "ocr": ocr_engine,
                "asr": self.runtime.speech.engine,
                "text_embed": self.runtime.text_encoder.engine,
            },
        )
        timings["total"] = time.perf_counter() - start
        if self.store is not None:
            with self._timed("store", timings):
                self.store.save(report, visual, text_vec)
            timings["total"] = time.perf_counter() - start
        return Outcome(report, cached=False)

    def add_reference(self, path: Path, title: str,
                      checked: Checked | None = None) -> ReferenceInfo:
        """Fingerprint ``path`` into the copyright library (same content: same id);
        ``checked`` as for :meth:`analyze`."""
        if self.store is None:
            raise ConfigError("adding a reference needs a database")
        check_file(path, self.limits)
        sha = checked.sha256 if checked is not None else sha256_file(path)
        info = checked.info if checked is not None else probe(path, self.limits)
        timings: dict[str, float] = {}
        step = 1.0 / self.settings.sample_fps
        hasher = FrameHasher()
        copies = Describer(self.runtime.classifier, step, flipped=True)
        with _IN_FLIGHT.entered() as in_flight:
            self._decode_frames(self._decoding(info, self._parallelism(in_flight)), timings,
                                [hasher.add, copies.add])
        with self._timed("fingerprint", timings):
            hashes, quality = hasher.result()
            audio = decode_audio(info)
            items, item_s = audio_fingerprint(audio)
            heard = landmarks(audio)
            fp = Fingerprint(step, hashes, quality, items, item_s)
            descriptors = copies.result()
        with self._timed("store", timings):
            return self.store.add_reference(sha, title, info.duration_s, fp, descriptors,
                                            heard)

    # lanes and helpers --------------------------------------------------------

    def _speech_lane(
        self, info: MediaInfo, timings: dict[str, float], listen: bool
    ) -> tuple[Transcript, np.ndarray, float, Landmarks]:
        """The transcript, the Chromaprint fingerprint and, with ``listen`` (there are
        references to match), the audio landmarks."""
        with self._timed("asr", timings):
            audio = decode_audio(info)
            transcript = self.runtime.speech.transcribe(audio)
        with self._timed("audio_fingerprint", timings):
            items, item_s = audio_fingerprint(audio)
            heard = landmarks(audio) if listen else EMPTY_LANDMARKS
        del audio
        malloc.trim()  # the speech lane's large transient arrays, before what comes next
        _ = self.runtime.sentiment_ready
        return transcript, items, item_s, heard

    def _decoding(self, info: MediaInfo, parallel: _Parallelism) -> Decoding:
        """The video's sampled frames, decoded on the GPU's video engines where they can
        (``video_decoder`` auto, on a GPU), else on the CPU."""
        return Decoding(info, self.settings.sample_fps, self.runtime.device,
                        gpu=self.settings.video_decoder == "auto",
                        segments=parallel.decode_segments, threads=parallel.decode_threads)

    def _decode_frames(self, decoding: Decoding, timings: dict[str, float],
                       consumers: Sequence[Callable[[Frame], None]]) -> float:
        """Hand each sampled frame to ``consumers`` as it is decoded (in any order when
        the video is decoded in segments); the last frame's time."""
        last_s = 0.0
        with self._timed("decode", timings):
            for frame in decoding:
                last_s = max(last_s, frame.time_s)
                for consume in consumers:
                    consume(frame)
        return last_s

    def _read_text(self, frames: Iterable[Frame],
                   readers: int) -> tuple[list[FrameText], EngineUse]:
        threshold, refresh = self.settings.ocr_change_threshold, self.settings.ocr_refresh_s
        if readers > 1:
            # several frames at once: their CPU work overlaps, their model calls batch
            with ThreadPoolExecutor(readers, thread_name_prefix="ocr") as pool:
                texts = read_frames_concurrently(self._read_one, frames, threshold, refresh,
                                                 pool, readers)
            with self.runtime.ocr_reader() as reader:
                return texts, reader.engine_use()
        with self.runtime.ocr_reader() as reader:
            reader.begin()
            texts = read_frames(reader, frames, threshold, refresh)
            return texts, reader.engine_use()

    def _read_one(self, rgb: np.ndarray) -> tuple[TextLine, ...]:
        with self.runtime.ocr_reader() as reader:
            return reader.read(rgb)

    @contextmanager
    def _timed(self, stage: str, timings: dict[str, float]) -> Iterator[None]:
        self.progress(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class _Parallelism:
    decode_segments: int
    decode_threads: int  # per segment; 0: FFmpeg's choice
    ocr_readers: int


class _InFlight:
    """How many videos this process is analyzing now."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @contextmanager
    def entered(self) -> Iterator[int]:
        """Count one more while inside; yields the count, this one included."""
        with self._lock:
            self._count += 1
            count = self._count
        try:
            yield count
        finally:
            with self._lock:
                self._count -= 1


_IN_FLIGHT = _InFlight()


class FrameLane(Generic[T]):
    """Work on a video's frames, in a thread of its own, fed one frame at a time while
    the video decodes. At most ``depth`` frames wait for it: decoding waits for a slow
    lane instead of piling frames up in memory."""

    def __init__(self, pool: ThreadPoolExecutor, work: Callable[[Iterator[Frame]], T],
                 depth: int = 8) -> None:
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=depth)
        self._closed = False
        self._future = pool.submit(work, self._frames())

    def _frames(self) -> Iterator[Frame]:
        while (frame := self._queue.get()) is not None:
            yield frame

    def _put(self, item: Frame | None) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if self._future.done():  # the work ended (failed): it takes nothing more
                    return

    def add(self, frame: Frame) -> None:
        self._put(frame)

    def close(self) -> None:
        """No more frames (also when decoding failed: the work ends on what it got)."""
        if not self._closed:
            self._closed = True
            self._put(None)

    def result(self) -> T:
        self.close()
        return self._future.result()


class DeferredLane(Generic[T]):
    """A :class:`FrameLane` that does its work after decoding, in the caller's thread
    (the naive, one-task-after-another baseline of the benchmarks; it keeps every frame)."""

    def __init__(self, work: Callable[[Iterator[Frame]], T]) -> None:
        self._work = work
        self._frames: list[Frame] = []

    def add(self, frame: Frame) -> None:
        self._frames.append(frame)

    def close(self) -> None:
        pass

    def result(self) -> T:
        frames, self._frames = sorted(self._frames, key=lambda f: f.index), []
        return self._work(iter(frames))


def _video_info(info: MediaInfo, sha: str, filename: str, duration_s: float) -> VideoInfo:
    return VideoInfo(
        id=sha[:16],
        sha256=sha,
        duration_s=duration_s,
        width=info.width,
        height=info.height,
        fps=info.fps,
        has_audio=info.has_audio,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        filename=filename,
        rotation=info.orientation.rotation,
        mirrored=info.orientation.mirrored,
        hdr=info.transfer,
        bit_depth=info.bit_depth,
        audio_track=info.audio_track,
        audio_tracks=info.audio_tracks,
        audio_language=info.audio_language,
    )
