"""Synthesize short test videos: real photos, burned-in captions, spoken audio.

Used by ``scripts/make_sample.py`` (the committed sample clip) and by the test
suite (copies, unrelated clips, bad inputs). Needs PyAV, Pillow, scikit-image,
Debian's ``espeak-ng`` and a CJK font (``fonts-wqy-zenhei``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


@dataclass(frozen=True)
class Scene:
    """One still photo shown for ``duration_s`` with caption lines at the bottom."""

    image: np.ndarray
    duration_s: float
    captions: tuple[str, ...] = ()
    zoom: float = 0.04  # slow push-in over the scene, so frames are not identical


@dataclass(frozen=True)
class ClipSpec:
    scenes: Sequence[Scene]
    speech: str | None = None
    voice: str = "en-us"
    words_per_minute: int = 140
    width: int = 720
    height: int = 1280
    fps: int = 30
    crf: int = 30
    audio_rate: int = 22050
    with_video: bool = True
    silent_audio: bool = False  # with speech=None: an audio track of digital silence


def font_path() -> str:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    raise RuntimeError("no CJK font found: apt-get install fonts-wqy-zenhei")


def speak(text: str, voice: str = "en-us", words_per_minute: int = 140) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng; returns mono int16 samples and the rate."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav_path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(wav_path), "rb") as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return samples, rate


def _fit(photo: np.ndarray, width: int, height: int, scale: float) -> Image.Image:
    """Place ``photo`` centred on a dark portrait canvas, scaled to the width."""
    img = Image.fromarray(photo).convert("RGB")
    target_w = int(width * scale)
    target_h = int(img.height * target_w / img.width)
    img = img.resize((target_w, target_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), (24, 24, 32))
    canvas.paste(img, ((width - target_w) // 2, (height - target_h) // 2 - height // 10))
    return canvas


def _draw_captions(canvas: Image.Image, captions: Sequence[str]) -> None:
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.truetype(font_path(), size=canvas.width // 14)
    y = int(canvas.height * 0.78)
    for line in captions:
        box = draw.textbbox((0, 0), line, font=font)
        x = (canvas.width - (box[2] - box[0])) // 2
        draw.text(
            (x, y), line, font=font, fill=(255, 255, 255), stroke_width=3, stroke_fill=(0, 0, 0)
        )
        y += int((box[3] - box[1]) * 1.6)


def render_frames(spec: ClipSpec):
    """Yield (frame RGB array) for every output frame of the clip."""
    for scene in spec.scenes:
        n = round(scene.duration_s * spec.fps)
        for i in range(n):
            scale = 0.92 + scene.zoom * i / max(n - 1, 1)
            canvas = _fit(scene.image, spec.width, spec.height, scale)
            _draw_captions(canvas, scene.captions)
            yield np.asarray(canvas)


def total_duration(spec: ClipSpec) -> float:
    return sum(s.duration_s for s in spec.scenes)


def write_clip(path: Path, spec: ClipSpec) -> Path:
    """Encode ``spec`` as H.264 + AAC in an MP4 (or audio only when with_video=False)."""
    duration = total_duration(spec)
    audio = None
    if spec.speech is None and spec.silent_audio:
        audio = np.zeros(int(duration * spec.audio_rate), np.int16)
    if spec.speech is not None:
        samples, rate = speak(spec.speech, spec.voice, spec.words_per_minute)
        audio = _resample(samples, rate, spec.audio_rate)
        want = int(duration * spec.audio_rate)
        pad = max(0, want - len(audio))
        audio = np.concatenate(
            [np.zeros(spec.audio_rate // 4, np.int16), audio, np.zeros(pad, np.int16)]
        )[:want]
    with av.open(str(path), "w") as out:
        vstream = None
        if spec.with_video:
            vstream = out.add_stream("libx264", rate=spec.fps)
            vstream.width, vstream.height = spec.width, spec.height
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(spec.crf), "preset": "medium", "g": str(spec.fps * 2)}
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=spec.audio_rate, layout="mono")
            astream.bit_rate = 48000
        if vstream is not None:
            for i, rgb in enumerate(render_frames(spec)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, spec.fps)
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        if astream is not None and audio is not None:
            chunk = 1024
            for start in range(0, len(audio), chunk):
                piece = audio[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(piece[None, :], format="s16", layout="mono")
                frame.sample_rate = spec.audio_rate
                frame.pts = start
                frame.time_base = Fraction(1, spec.audio_rate)
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
    return path


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    n = int(len(samples) * target / rate)
    x = np.linspace(0, len(samples) - 1, n)
    return np.interp(x, np.arange(len(samples)), samples.astype(np.float32)).astype(np.int16)


def transcode(
    src: Path,
    dst: Path,
    width: int,
    height: int,
    crf: int = 38,
    audio_bitrate: int = 32000,
    start_s: float = 0.0,
) -> Path:
    """Re-encode ``src`` smaller and at a lower bitrate (a typical re-upload)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.options = {"crf": str(crf), "preset": "veryfast"}
        aout = out.add_stream("aac", rate=22050, layout="mono") if ain else None
        if aout is not None:
            aout.bit_rate = audio_bitrate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=22050)
        streams = [s for s in (vin, ain) if s is not None]
        for frame in inp.decode(*streams):
            if frame.time is not None and frame.time < start_s:
                continue
            if isinstance(frame, av.VideoFrame):
                small = frame.reformat(width=width, height=height, format="yuv420p")
                small.pts = round((frame.time - start_s) * vout.average_rate) if frame.time else 0
                small.time_base = Fraction(1, int(vout.average_rate))
                out.mux(vout.encode(small))
            elif aout is not None:
                for piece in resampler.resample(frame):
                    out.mux(aout.encode(piece))
        out.mux(vout.encode(None))
        if aout is not None:
            out.mux(aout.encode(None))
    return dst
