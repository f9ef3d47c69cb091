"""Fit the projection that copy descriptors are searched with: PCA of EfficientNet-Lite0's
pooled features (1280-d) down to 256 dimensions.

    .venv/bin/python scripts/fit_copy_projection.py \
        --out reelscope/models/copy_projection.npz

The copy index (``reelscope.store.vectors``) holds each reference's key frames projected
this way, so that 100k references fit in a few hundred MB and a search stays fast; the
full descriptors then align the candidates it finds. The images are real and none is in
the copy-detection benchmark's footage: the photos and figures of Debian's ``opencv-doc``
(fetched by ``scripts/copyedits.py``, about 2,300 files: photos, scenes, screenshots,
charts) and the wallpapers of ``mate-backgrounds``. Each is described as reelscope
describes a frame (shrunk, squashed to the model's input), whole, flipped and through a
random crop of 60-90% with a colour change, the edits the projection must keep apart.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import copyedits as ce  # noqa: E402

from reelscope.tasks.copydetect import WORK_SIDE, shrunk, squash  # noqa: E402

DIM = 256
BACKGROUNDS = Path("/usr/share/backgrounds/mate")


def images() -> list[Path]:
    ce.opencv_clip("vtest")  # unpacks opencv-doc beside the footage, once
    doc = ce.footage_dir() / "opencv-doc"
    found = [p for p in sorted(doc.rglob("*")) + sorted(BACKGROUNDS.rglob("*"))
             if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    if not found:
        sys.exit("no images found: run scripts/install.sh (mate-backgrounds) and "
                 "scripts/copyedits.py's footage fetch first")
    return found


def read_rgb(path: Path) -> np.ndarray | None:
    """An image as RGB; None for one OpenCV cannot read or under 32 pixels a side."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or min(bgr.shape[:2]) < 32:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def views(rgb: np.ndarray, rng: random.Random) -> list[np.ndarray]:
    small = shrunk(rgb, WORK_SIDE)
    h, w = small.shape[:2]
    f = rng.uniform(0.6, 0.9)
    ch, cw = max(8, int(h * f)), max(8, int(w * f))
    y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
    crop = small[y:y + ch, x:x + cw].astype(np.float32)
    crop = np.clip((crop - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30), 0, 255)
    return [small, small[:, ::-1], crop.astype(np.uint8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    import torch

    from reelscope.tasks.classify import classifier_module

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    net = classifier_module()
    feats: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    paths = images()
    used = 0
    for n, path in enumerate(paths):
        rgb = read_rgb(path)
        if rgb is None:
            continue
        used += 1
        batch += [squash(v) for v in views(rgb, rng)]
        if len(batch) >= 96 or n == len(paths) - 1:
            with torch.no_grad():
                _, f = net(torch.from_numpy(np.stack(batch)))
            feats.append(f.numpy())
            batch = []
            print(f"{n + 1}/{len(paths)} images", end="\r", flush=True)
    x = np.concatenate(feats).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # descriptors are compared normalised
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    kept = float((s[:DIM] ** 2).sum() / (s ** 2).sum())
    np.savez_compressed(args.out, mean=mean.astype(np.float32),
                        components=vt[:DIM].astype(np.float32),
                        images=np.array(used), variance_kept=np.array(kept))
    print(f"\n{used} images, {len(x)} views: {DIM} components keep {kept:.1%} of the "
          f"variance; wrote {args.out}")


if __name__ == "__main__":
    main()
