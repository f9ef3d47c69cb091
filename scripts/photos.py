"""A folder of real photos for calibration and accuracy gates: scikit-image's bundled
photos and, where Debian's mate-backgrounds is installed, its nature wallpapers.

    python scripts/photos.py DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2

MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def write_photos(folder: Path) -> Path:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        rgb = getattr(data, name)()[..., :3]
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for jpg in sorted(MATE_NATURE.glob("*.jpg")):
        shutil.copy(jpg, folder / jpg.name)
    return folder


if __name__ == "__main__":
    print(write_photos(Path(sys.argv[1])))
