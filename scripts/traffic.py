"""Varied short clips, like normal uploads: real photos, captions, 12 s, no speech.

Used by the monitoring tests and ``benchmarks/monitor_false_alarms.py``: the
monitor's drift reference is recorded on one set of such clips, and normal
traffic is another set.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import clipgen
import numpy as np
import photos

CAPTIONS = (
    "今天很开心", "Look at this", "周末去哪里", "Best day ever", "美丽的风景", "So beautiful",
    "我的日常", "Daily vlog", "大家好", "Hello friends", "新的一天", "Good morning",
)


def load_photos(folder: Path, max_side: int = 720) -> list[np.ndarray]:
    """The test photos (scikit-image's and Debian's wallpapers), at most ``max_side`` px."""
    import cv2

    photos.write_photos(folder)
    out = []
    for path in sorted(folder.iterdir()):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        scale = max_side / max(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def varied_clip(path: Path, seed: int, pictures: list[np.ndarray], seconds: float = 12.0,
                width: int = 360, height: int = 640, fps: int = 10) -> Path:
    """2 to 4 scenes of random photos with random captions; different for every seed."""
    rng = random.Random(seed)
    n = rng.randint(2, 4)
    cuts = sorted(rng.uniform(0.2, 0.8) * seconds for _ in range(n - 1))
    bounds = [0.0, *cuts, seconds]
    scenes = tuple(
        clipgen.Scene(
            pictures[rng.randrange(len(pictures))],
            round(bounds[i + 1] - bounds[i], 1) or 0.5,
            (rng.choice(CAPTIONS),),
            zoom=rng.uniform(0.0, 0.15),
        )
        for i in range(n)
    )
    spec = clipgen.ClipSpec(scenes=scenes, width=width, height=height, fps=fps, crf=32)
    return clipgen.write_clip(path, spec)


def write_clips(folder: Path, seeds: range, pictures: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [varied_clip(folder / f"clip{seed:04}.mp4", seed, pictures) for seed in seeds]


if __name__ == "__main__":
    pics = load_photos(Path(sys.argv[1]) / "photos")
    print(len(write_clips(Path(sys.argv[1]), range(int(sys.argv[2])), pics)))
