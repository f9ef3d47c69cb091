"""Small JPEG thumbnails of sampled frames, for the report page's timeline."""

from __future__ import annotations

from collections.abc import Sequence

import cv2

from reelscope.video.decode import Frame

THUMB_WIDTH = 160
MAX_THUMBS = 40
JPEG_QUALITY = 80


def thumbnails(frames: Sequence[Frame], every_s: float = 1.0) -> list[tuple[float, bytes]]:
    """(time, JPEG bytes) for about one frame per ``every_s``, at most MAX_THUMBS."""
    picked: list[Frame] = []
    next_t = 0.0
    for frame in frames:
        if frame.time_s + 1e-6 >= next_t:
            picked.append(frame)
            next_t = frame.time_s + every_s
    if len(picked) > MAX_THUMBS:
        step = len(picked) / MAX_THUMBS
        picked = [picked[int(i * step)] for i in range(MAX_THUMBS)]
    out = []
    for frame in picked:
        h, w = frame.rgb.shape[:2]
        size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
        small = cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
        if ok:
            out.append((frame.time_s, buf.tobytes()))
    return out
