"""On-screen text in Chinese and English: PP-OCRv6 through rapidocr.

Frames whose picture has not changed since the last OCR'd frame reuse its
result; the same caption across consecutive frames becomes one entry.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from reelscope.engine.backends.onnxrt import OnnxRuntimeRunner
from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.pipeline.serving import RunnerSession, ServedModel
from reelscope.report import EngineUse, OcrEntry
from reelscope.tasks.lang import language_of
from reelscope.video.decode import Frame

MIN_TEXT_SCORE = 0.6
# the recognizer's text lines are padded (zeros after normalization, as rapidocr pads the
# lines of one call) to a multiple of this width, so lines of other calls and videos batch
REC_WIDTH_BUCKET = 64
MIN_FRAME_SIDE = 8  # frames narrower or shorter than this (pixels) hold no readable text
SAME_TEXT_RATIO = 0.8  # captions this similar in consecutive frames are one caption


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True)
class FrameText:
    time_s: float
    lines: tuple[TextLine, ...]
    reused: bool  # True when the frame was not OCR'd because it had not changed


class ChangeDetector:
    """Says whether a frame differs from another in any region.

    Frames are shrunk to grey thumbnails and cut into a grid; a frame counts
    as changed when the mean absolute difference of any cell exceeds the
    threshold, so a new caption (a small region) is caught while a slow zoom
    or compression noise is not.
    """

    def __init__(self, threshold: float, grid: tuple[int, int] = (16, 9)) -> None:
        self.threshold = threshold
        self.grid = grid

    def thumbnail(self, rgb: np.ndarray) -> np.ndarray:
        rows, cols = self.grid
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, (cols * 8, rows * 8), interpolation=cv2.INTER_AREA)
        return thumb.astype(np.float32)

    def differ(self, thumb: np.ndarray, other: np.ndarray) -> bool:
        rows, cols = self.grid
        diff = np.abs(thumb - other).reshape(rows, 8, cols, 8).mean(axis=(1, 3))
        return bool(diff.max() > self.threshold)


class OcrReader:
    """PP-OCRv6 detector + recognizer: rapidocr's pre- and post-processing around the two
    served models, one image at a time (a reader is used by one thread at a time; readers
    share the served models)."""

    def __init__(self, size: str, det: ServedModel, rec: ServedModel,
                 det_max_side: int = 960) -> None:
        from omegaconf import flag_override
        from rapidocr import RapidOCR
        from rapidocr.utils.typings import ModelType, OCRVersion

        self.models = (model(f"ocr_det_{size}"), model(f"ocr_rec_{size}"))
        kind = ModelType.TINY if size == "tiny" else ModelType.SMALL
        params = {
            "Global.use_cls": False,
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "Det.ocr_version": OCRVersion.PPOCRV6,
            "Rec.ocr_version": OCRVersion.PPOCRV6,
            "Det.model_type": kind,
            "Rec.model_type": kind,
            # rapidocr's default scales the *shorter* side up to 736 (a 720x1280 frame
            # becomes 736x1308); bounding the longer side reads captions as well for
            # about half the detector's work.
            "Det.limit_type": "max",
            "Det.limit_side_len": det_max_side,
            "Det.model_path": str(self.models[0].paths()[0]),
            "Rec.model_path": str(self.models[1].paths()[0]),
        }
        served = (det, rec)
        try:
            self._engine = RapidOCR(params=params)
            # rapidocr 3.10 takes a ready session from its per-model config (``session``):
            # an ONNX Runtime engine's own, so that it loads no second copy for the model's
            # metadata (input names, the recognizer's characters)
            own = [_onnxruntime_session(m) for m in served]
            with flag_override(self._engine.cfg, "allow_objects", True):
                for cfg, session in zip((self._engine.cfg.Det, self._engine.cfg.Rec), own,
                                        strict=True):
                    if session is not None:
                        cfg.session = session
            self._engine._load_det_model()
            self._engine._load_rec_model()
            det_part: Any = self._engine.text_det
            det_input = DetInput(det_part.limit_side_len, det_part.limit_type, det_part.mean,
                                 det_part.std)
            det_part.get_preprocess = lambda: det_input
            parts: tuple[Any, Any] = (self._engine.text_det, self._engine.text_rec)
            self.faces = tuple(
                RunnerSession(m, part.session.session, pad)
                for m, part, pad in zip(served, parts, (0, REC_WIDTH_BUCKET), strict=True))
            for part, face in zip(parts, self.faces, strict=True):
                part.session.session = face  # the served models answer rapidocr's calls
        except Exception as exc:  # rapidocr raises plain exceptions on bad models
            raise ModelError(f"cannot load the OCR models: {exc}") from exc
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    @property
    def engine(self) -> EngineUse:
        return self.engine_use()

    def begin(self) -> None:
        """Start collecting which paths (engine, fallback) serve this reader's reads."""
        for face in self.faces:
            face.paths = set()

    def engine_use(self) -> EngineUse:
        det, rec = (face.model.engine_use(face.paths) for face in self.faces)
        paths = {p for face in self.faces for p in face.paths}

        def both(a: str, b: str) -> str:  # the detector's and the recognizer's, when they differ
            return a if a == b else f"{a} + {b}"

        return EngineUse(both(det.backend, rec.backend), both(det.precision, rec.precision),
                         f"{det.model} + {rec.model}",
                         "+".join(sorted(paths)) or "engine",
                         det.fallback_active or rec.fallback_active, det.device)

    def read(self, rgb: np.ndarray) -> tuple[TextLine, ...]:
        if min(rgb.shape[:2]) < MIN_FRAME_SIDE:
            return ()  # no readable text fits
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # 0.25 ms; numpy copies rgb[..., ::-1] in 11
        result: Any = self._engine(bgr, use_det=True, use_cls=False, use_rec=True)
        if result.boxes is None or result.txts is None or result.scores is None:
            return ()
        lines = []
        for text, score, box in zip(result.txts, result.scores, result.boxes, strict=False):
            text = text.strip()
            if not text or score < MIN_TEXT_SCORE:
                continue
            xs, ys = box[:, 0], box[:, 1]
            lines.append(
                TextLine(
                    text,
                    float(score),
                    (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
                )
            )
        lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
        return tuple(lines)


class DetInput:
    """rapidocr's detector input (its ``DetPreProcess``: the frame resized, normalized,
    channels first, a batch of one), normalized in one OpenCV pass. rapidocr's own
    normalization makes four passes over the frame in float64, about 13 ms of a 960x544
    frame's 15 here, and is the costliest Python-side step of reading a frame."""

    def __init__(self, limit_side_len: int, limit_type: str,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        from rapidocr.ch_ppocr_det.utils import DetPreProcess

        self.resizer = DetPreProcess(limit_side_len, limit_type, mean, std)
        self.mean = np.asarray(self.resizer.mean, np.float64) * 255.0
        self.std = np.asarray(self.resizer.std, np.float64) * 255.0

    def __call__(self, img: np.ndarray) -> np.ndarray | None:
        resized = self.resizer.resize(img)
        if resized is None:
            return None
        if np.all(self.std == self.std[0]):  # one scale for every channel
            return np.asarray(cv2.dnn.blobFromImage(
                resized, 1.0 / float(self.std[0]), (0, 0), [float(m) for m in self.mean],
                swapRB=False, crop=False))
        x = resized.astype(np.float32)
        x -= self.mean.astype(np.float32)
        x *= (1.0 / self.std).astype(np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _onnxruntime_session(served: ServedModel) -> Any:
    """The ONNX Runtime session of a served model's engine, if it is one."""
    runner = served.guarded.primary if served.guarded is not None else served.runner
    return runner.session if isinstance(runner, OnnxRuntimeRunner) else None


def read_frames(
    reader: OcrReader, frames: Iterable[Frame], change_threshold: float, refresh_s: float
) -> list[FrameText]:
    """OCR the frames, reusing the last result for frames that did not change.

    A frame is read again at least every ``refresh_s`` seconds, so slow changes
    that never cross the threshold between two frames are still caught. No frame is
    kept once it has been read.
    """
    planned = [(frame.index, frame.time_s, reader.read(frame.rgb) if needed else None)
               for frame, needed in _plan(frames, change_threshold, refresh_s)]
    return _in_order(planned)


def read_frames_concurrently(
    read: Callable[[np.ndarray], tuple[TextLine, ...]], frames: Iterable[Frame],
    change_threshold: float, refresh_s: float, pool: Executor, readers: int,
) -> list[FrameText]:
    """:func:`read_frames`, with the frames to read handed to ``pool`` as they arrive,
    at most ``2 * readers`` waiting or being read at once (``read`` must be safe to call
    from several threads at once)."""
    room = threading.BoundedSemaphore(2 * readers)

    def read_one(rgb: np.ndarray) -> tuple[TextLine, ...]:
        try:
            return read(rgb)
        finally:
            room.release()

    planned: list[tuple[int, float, Future[tuple[TextLine, ...]] | None]] = []
    for frame, needed in _plan(frames, change_threshold, refresh_s):
        if needed:
            room.acquire()
        planned.append((frame.index, frame.time_s,
                        pool.submit(read_one, frame.rgb) if needed else None))
    return _in_order([(index, time_s, None if pending is None else pending.result())
                      for index, time_s, pending in planned])


def _in_order(planned: list[tuple[int, float, tuple[TextLine, ...] | None]]
              ) -> list[FrameText]:
    """The frames' texts in time order; a frame not read has its predecessor's."""
    out: list[FrameText] = []
    for _, time_s, lines in sorted(planned, key=lambda item: item[0]):
        if lines is None:
            out.append(FrameText(time_s, out[-1].lines, reused=True))
        else:
            out.append(FrameText(time_s, lines, reused=False))
    return out


def _plan(frames: Iterable[Frame], change_threshold: float,
          refresh_s: float) -> Iterator[tuple[Frame, bool]]:
    """Each frame, and whether it must be read: it differs from the frame before it, or
    it is time to refresh. Frames may come out of order (segments of a video decoded at
    once): a frame whose predecessor has not come yet is read."""
    detector = ChangeDetector(change_threshold)
    seen: dict[int, tuple[np.ndarray, float]] = {}  # index -> thumbnail, time last read
    for frame in frames:
        thumb = detector.thumbnail(frame.rgb)
        before = seen.pop(frame.index - 1, None)  # its only successor is this frame
        if before is not None and not detector.differ(thumb, before[0]) \
                and frame.time_s - before[1] < refresh_s - 1e-6:
            seen[frame.index] = (thumb, before[1])
            yield frame, False
            continue
        seen[frame.index] = (thumb, frame.time_s)
        yield frame, True


@dataclass
class _Caption:
    """A caption being followed across consecutive frames."""

    text: str
    start_s: float
    end_s: float
    best: float
    scores: list[float]

    def entry(self) -> OcrEntry:
        return OcrEntry(
            text=self.text,
            start_s=self.start_s,
            end_s=self.end_s,
            score=float(np.mean(self.scores)),
            language=language_of(self.text),
        )


def merge_captions(frames: Sequence[FrameText], step_s: float,
                   duration_s: float) -> tuple[OcrEntry, ...]:
    """One entry per caption: the same text over consecutive frames is merged; it lasts a
    sampling step past its last frame, never past the video's end."""
    following: list[_Caption] = []
    done: list[OcrEntry] = []
    for ft in frames:
        seen: list[_Caption] = []
        end_s = min(ft.time_s + step_s, duration_s)
        for line in ft.lines:
            cap = next((c for c in following if _same(c.text, line.text)), None)
            if cap is None:
                cap = _Caption(line.text, ft.time_s, end_s, line.score, [])
            else:
                following.remove(cap)
                cap.end_s = end_s
                if line.score > cap.best:
                    cap.text, cap.best = line.text, line.score
            cap.scores.append(line.score)
            seen.append(cap)
        done.extend(c.entry() for c in following)
        following = seen
    done.extend(c.entry() for c in following)
    done.sort(key=lambda e: (e.start_s, e.end_s))
    return tuple(done)


def _same(a: str, b: str) -> bool:
    return a == b or difflib.SequenceMatcher(None, a, b).ratio() >= SAME_TEXT_RATIO
