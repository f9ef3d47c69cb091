"""Representative inputs for INT8 calibration and for the accuracy gate.

Pictures come from a folder of images and videos, from one video (frames
sampled), or from a Python iterable of RGB images. Each picture yields crops the
way a deployed model sees them (centre crops, random resized crops, flips, a
little colour jitter), normalized as the model expects. Held-out inputs for the
gate come from pictures and crops that calibration never saw.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reelscope.engine.options import CalibrationOptions
from reelscope.errors import ConfigError, InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
FRAMES_PER_VIDEO = 16
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclass(frozen=True)
class InputSet:
    """Model-ready inputs (N, C, H, W float32) for one input tensor, split in two."""

    calibration: np.ndarray
    holdout: np.ndarray
    origin: str  # where they came from, for the manifest
    digest: str  # identifies the pictures and the preparation, for caches


def pictures_from_path(source: Path) -> tuple[list[np.ndarray], str]:
    """RGB pictures from an image folder (videos in it sampled too) or from one video,
    with a digest of the files read."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"calibration source {source} does not exist")
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    files = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    pictures: list[np.ndarray] = []
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        if path.suffix.lower() in IMAGE_SUFFIXES:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                log.warning("calibration: skipping %s, not a readable image", path)
                continue
            pictures.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        else:
            pictures.extend(_video_frames(path))
    if not pictures:
        raise InputError(
            f"calibration source {source} holds no readable images or videos "
            f"({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})"
        )
    return pictures, digest.hexdigest()


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    from reelscope.video.decode import sample_frames
    from reelscope.video.media import Limits, probe

    info = probe(path, Limits(max_duration_s=3600, max_side_px=8192, max_file_mb=4096))
    fps = min(2.0, FRAMES_PER_VIDEO / max(info.duration_s, 1e-3))
    for i, frame in enumerate(sample_frames(info, fps)):
        if i >= FRAMES_PER_VIDEO:
            break
        yield frame.rgb


def pictures_digest(pictures: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for p in pictures:
        digest.update(np.ascontiguousarray(p).tobytes())
    return digest.hexdigest()


def normalize(batch_hwc: np.ndarray, how: str) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32."""
    x = batch_hwc.astype(np.float32)
    if how == "symmetric":
        x = x / 127.5 - 1.0
    elif how == "imagenet":
        x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
    elif how == "unit":
        x = x / 255.0
    else:
        raise ConfigError(f"unknown normalization {how!r}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _centre_crop(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    ih, iw = rgb.shape[:2]
    scale = max(h / ih, w / iw)
    resized = cv2.resize(rgb, (max(w, round(iw * scale)), max(h, round(ih * scale))),
                         interpolation=cv2.INTER_AREA)
    top = (resized.shape[0] - h) // 2
    left = (resized.shape[1] - w) // 2
    return resized[top : top + h, left : left + w]


def _random_crop(rgb: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    ih, iw = rgb.shape[:2]
    area = ih * iw * rng.uniform(0.2, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))) * (w / h)
    ch = int(min(ih, round(np.sqrt(area / aspect))))
    cw = int(min(iw, round(np.sqrt(area * aspect))))
    top = int(rng.integers(0, ih - ch + 1))
    left = int(rng.integers(0, iw - cw + 1))
    crop = rgb[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)
    gain = rng.uniform(0.8, 1.2)
    bias = rng.uniform(-0.2, 0.2) * 128
    return np.clip(out.astype(np.float32) * gain + bias * (1 - gain), 0, 255).astype(np.uint8)


def _crops(pictures: Sequence[np.ndarray], n: int, h: int, w: int,
           rng: np.random.Generator) -> np.ndarray:
    """A centre crop of each picture first, then random crops round-robin."""
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        pic = pictures[i % len(pictures)]
        out[i] = _centre_crop(pic, h, w) if i < len(pictures) else _random_crop(pic, h, w, rng)
    return out


def make_inputs(pictures: Sequence[np.ndarray], shape_chw: tuple[int, int, int],
                options: CalibrationOptions, digest: str, origin: str) -> InputSet:
    """Calibration and held-out inputs from RGB pictures.

    With five pictures or more, every fifth one is held out for the gate only;
    the gate also gets fresh random crops (another random stream) of the rest."""
    c, h, w = shape_chw
    if c != 3:
        raise ConfigError(f"pictures calibrate 3-channel image inputs; this input has {c}")
    pictures = [p for p in pictures if p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) >= 8]
    if not pictures:
        raise InputError("no usable calibration pictures (need RGB images at least 8x8)")
    held = pictures[::5] if len(pictures) >= 5 else []
    seen = [p for i, p in enumerate(pictures) if i % 5 != 0] if held else list(pictures)
    rng_cal = np.random.default_rng(options.seed)
    rng_gate = np.random.default_rng(options.seed + 1_000_003)
    calib = _crops(seen, options.samples, h, w, rng_cal)
    n_held = min(options.holdout // 2, len(held) * 8) if held else 0
    gate = np.concatenate([
        _crops(held, n_held, h, w, rng_gate) if n_held else np.zeros((0, h, w, 3), np.uint8),
        np.stack([_random_crop(seen[i % len(seen)], h, w, rng_gate)
                  for i in range(options.holdout - n_held)]),
    ])
    key = hashlib.sha256(
        f"{digest}|{shape_chw}|{options.samples}|{options.holdout}|"
        f"{options.normalization}|{options.seed}".encode()
    ).hexdigest()
    return InputSet(
        calibration=normalize(calib, options.normalization),
        holdout=normalize(gate, options.normalization),
        origin=f"{origin}: {len(pictures)} pictures, {len(held)} held out",
        digest=key,
    )


def from_arrays(arrays: Iterable[np.ndarray], shape_chw: tuple[int, int, int],
                options: CalibrationOptions) -> InputSet:
    """From an iterable of RGB pictures (H, W, 3 uint8) or of ready inputs (C, H, W float)."""
    items = list(arrays)
    if not items:
        raise InputError("the calibration iterable is empty")
    if all(a.ndim == 3 and a.shape == shape_chw and a.dtype != np.uint8 for a in items):
        ready = np.stack(items).astype(np.float32)
        n_held = max(1, min(options.holdout, len(ready) // 4))
        key = hashlib.sha256(ready.tobytes()).hexdigest()
        return InputSet(ready[:-n_held], ready[-n_held:], f"{len(ready)} arrays", key)
    return make_inputs(items, shape_chw, options, pictures_digest(items), "iterable")


def centre_inputs(pictures: Sequence[np.ndarray], shape_chw: tuple[int, int, int],
                  normalization: str, limit: int = 1024) -> np.ndarray:
    """Each picture's centre crop, as a pipeline frames it: no augmentation (monitor reference)."""
    _, h, w = shape_chw
    usable = [p for p in pictures if p.ndim == 3 and p.shape[2] == 3][:limit]
    if not usable:
        raise InputError("no usable pictures for the monitor reference")
    return normalize(np.stack([_centre_crop(p, h, w) for p in usable]), normalization)


def random_inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Standard-normal inputs, used by the gate only when no pictures were given."""
    return np.random.default_rng(seed).standard_normal((n, *shape[1:]), dtype=np.float32)
