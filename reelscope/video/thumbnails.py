"""Small JPEG thumbnails of sampled frames, for the report page's timeline, made as the
frames pass (no frame is kept)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

from reelscope.video.decode import Frame

THUMB_WIDTH = 160
THUMB_MAX_HEIGHT = 320  # a very tall frame is shrunk to this height instead
MAX_THUMBS = 40
JPEG_QUALITY = 80


class ThumbnailMaker:
    """About one thumbnail every ``every_s`` seconds of video, at most MAX_THUMBS: the
    earliest frame of each slot of ``every_s`` seconds. When a video has more slots than
    that, the slots are doubled in length (so a long video's thumbnails span all of it).
    Frames may come in any order."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.slots: dict[int, tuple[float, bytes]] = {}

    def add(self, frame: Frame) -> None:
        slot = math.floor(frame.time_s / self.every_s + 1e-9)
        kept = self.slots.get(slot)
        if kept is not None and kept[0] <= frame.time_s:
            return
        jpeg = _jpeg(frame.rgb)
        if jpeg is None:
            return
        self.slots[slot] = (frame.time_s, jpeg)
        while len(self.slots) > MAX_THUMBS:
            self.every_s *= 2
            merged: dict[int, tuple[float, bytes]] = {}
            for t, data in sorted(self.slots.values(), key=lambda item: item[0]):
                merged.setdefault(math.floor(t / self.every_s + 1e-9), (t, data))
            self.slots = merged

    def result(self) -> list[tuple[float, bytes]]:
        """(time, JPEG bytes), in time order."""
        return sorted(self.slots.values(), key=lambda item: item[0])


def thumbnails(frames: Iterable[Frame], every_s: float = 1.0) -> list[tuple[float, bytes]]:
    """:meth:`ThumbnailMaker.result` of ``frames``."""
    maker = ThumbnailMaker(every_s)
    for frame in frames:
        maker.add(frame)
    return maker.result()


def _jpeg(rgb: np.ndarray) -> bytes | None:
    h, w = rgb.shape[:2]
    scale = min(THUMB_WIDTH / w, THUMB_MAX_HEIGHT / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    return buf.tobytes() if ok else None
