"""Decoding on the GPU's video engines (NVDEC), through NVIDIA's PyNvVideoCodec.

Only the sampled frames are asked for: the decoder seeks to the keyframe before each
and decodes from there on the GPU's own video engine, so the CPU only reads packets.
Each frame is converted to RGB by the decoder, scaled on the GPU to the size the models
take (as :class:`reelscope.video.decode.Pictures` does on the CPU), and only that small
frame is copied to the host. Which frames are kept, and their times, come from the same
packet index the CPU path uses (:func:`reelscope.video.decode.index_video`), so both keep
the same frames.

A video is decoded here when it can be: 8-bit 4:2:0 SDR H.264, HEVC, VP9 or AV1 in
limited range, on a CUDA device, with PyNvVideoCodec installed. :func:`unsupported`
says why another is not; the analyzer decodes that one on the CPU.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Iterator

import av
import numpy as np

from reelscope.gpu.gate import GATE
from reelscope.report import EngineUse
from reelscope.video.decode import Frame, Pictures, VideoIndex, check_ends, index_video
from reelscope.video.media import MediaInfo
from reelscope.video.segments import Emit, decode_frames, in_parallel, plan

log = logging.getLogger(__name__)

CODECS = frozenset({"h264", "hevc", "vp9", "av1"})
PIXEL_FORMATS = frozenset({"yuv420p"})  # 8-bit 4:2:0, limited range
BATCH = 8  # sampled frames asked for at once (their RGB copies held on the GPU together)
# A video's decoders at once at most: each opens and indexes the file on the CPU. One H200,
# a 15 s 1080p clip's 30 sampled frames: 0.80 s with one decoder, 0.54 s with 2, 0.55 s with
# 4, 0.80 s with 8 (benchmarks/results-decode-segments-h200-2026-12-01-42b99e0.json).
MAX_SEGMENTS = 2


class NvdecError(Exception):
    """The GPU's decoder could not decode this video (the CPU decodes it instead)."""


def version() -> str:
    """PyNvVideoCodec's version, or "" when it is not installed."""
    try:
        return importlib.metadata.version("pynvvideocodec")
    except importlib.metadata.PackageNotFoundError:
        return ""


def unsupported(info: MediaInfo, device: str) -> str:
    """Why this video is not decoded on ``device``'s video engines ("" when it is)."""
    if not device.startswith("cuda"):
        return "not on a GPU"
    if info.video_codec not in CODECS:
        return f"{info.video_codec} is not decoded by NVDEC here"
    if info.pixel_format not in PIXEL_FORMATS or info.transfer or info.bt2020:
        return (f"{info.pixel_format or 'its pixel format'} (not 8-bit 4:2:0 SDR in limited "
                "range) is converted on the CPU")
    if not version():
        return "PyNvVideoCodec is not installed"
    return ""


def nvdec_frames(info: MediaInfo, index: VideoIndex, device: str, segments: int = 1
                 ) -> Iterator[Frame]:
    """The sampled frames of ``index`` decoded on ``device``'s video engines, as
    :class:`Pictures` makes them on the CPU (scaled, turned as shown). With ``segments``
    > 1 the video is cut at keyframes (:func:`segments.plan`) and each run is decoded by a
    decoder of its own, at once (the GPU has several video engines): frames come in each
    run's order, the runs' interleaved. Raises :class:`NvdecError` when a decoder fails or
    disagrees with the index about the frames; :class:`CorruptMediaError` as the CPU path
    does for a truncated video."""
    runs = plan(index.keyframes, info.duration_s, segments)
    kept = sorted(index.chosen, key=index.chosen.__getitem__)
    wanted = [[p for p in kept if run.start_s <= index.times[p] < run.end_s] for run in runs]
    parts = [functools.partial(_decode, info, index, device, w) for w in wanted if w]
    count, last_t = yield from in_parallel(parts)
    check_ends(info, count, last_t)


def _decode(info: MediaInfo, index: VideoIndex, device: str, kept: list[int], emit: Emit
            ) -> float:
    """Decode the frames ``kept`` (their pts, in order) with a decoder of their own and hand
    each to ``emit``; the last one's time."""
    import PyNvVideoCodec as nvc
    import torch
    import torch.nn.functional as F

    gpu = torch.device(device)
    try:
        with GATE.shared():
            decoder = nvc.SimpleDecoder(str(info.path), gpu_id=gpu.index or 0,
                                        use_device_memory=True,
                                        output_color_type=nvc.OutputColorType.RGB)
            count = len(decoder)
    except Exception as exc:  # the library raises plain exceptions
        raise NvdecError(f"the decoder cannot open it: {exc}") from exc
    shown = sorted(index.times, key=index.times.__getitem__)  # every frame, in display order
    if count != len(shown):
        raise NvdecError(f"it counts {count} frames, the packets {len(shown)}")
    position = {pts: i for i, pts in enumerate(shown)}
    width, height = Pictures(info).stored_size
    orientation = info.orientation
    last_t = -1.0
    with torch.cuda.device(gpu), torch.inference_mode():
        for start in range(0, len(kept), BATCH):
            emit.check()
            batch = kept[start : start + BATCH]
            with GATE.shared():  # see gpu.gate: CUDA graph captures wait for this
                try:
                    decoded = decoder.get_batch_frames_by_index([position[p] for p in batch])
                    rgb = torch.stack([torch.from_dlpack(f) for f in decoded])  # N, H, W, 3
                except Exception as exc:
                    raise NvdecError(f"decoding failed: {exc}") from exc
                if rgb.shape[0] != len(batch) or rgb.shape[-1] != 3:
                    raise NvdecError(f"it gave {tuple(rgb.shape)} for {len(batch)} frames")
                if (rgb.shape[2], rgb.shape[1]) != (width, height):
                    chw = F.interpolate(rgb.permute(0, 3, 1, 2).float(), size=(height, width),
                                        mode="bilinear", antialias=True, align_corners=False)
                    rgb = chw.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
                    del chw
                host = rgb.contiguous().cpu().numpy()
                del decoded, rgb  # the GPU's copies freed inside the gate
            for pts, picture in zip(batch, host, strict=True):
                last_t = index.times[pts]
                emit(Frame(index=index.chosen[pts], time_s=max(last_t, 0.0),
                           rgb=orientation.apply(np.ascontiguousarray(picture))))
    return last_t


class Decoding:
    """A video's sampled frames: from the GPU's video engines where they can decode it,
    else (or, when they fail, from the frame where they failed) from the CPU, cut into
    ``segments`` parts. After the frames are read, :meth:`use` says what served them."""

    def __init__(self, info: MediaInfo, fps: float, device: str, *, gpu: bool,
                 segments: int, threads: int) -> None:
        self.info, self.fps, self.device = info, fps, device
        self.segments, self.threads = segments, threads
        self.why_cpu = unsupported(info, device) if gpu else "the CPU decoder was chosen"
        self.failed = ""  # why the GPU's decoder gave up on this video

    def __iter__(self) -> Iterator[Frame]:
        handed: set[int] = set()
        if not self.why_cpu:
            index = index_video(self.info, 1.0 / self.fps)
            if index is None:
                self.why_cpu = "its packets have no timestamps"
            else:
                try:
                    segments = min(self.segments, MAX_SEGMENTS)
                    for frame in nvdec_frames(self.info, index, self.device, segments):
                        handed.add(frame.index)
                        yield frame
                    return
                except NvdecError as exc:
                    self.failed = str(exc)
                    log.warning("%s: NVDEC failed (%s); decoded on the CPU from frame %d",
                                self.info.path, exc, len(handed))
        for frame in decode_frames(self.info, self.fps, self.segments, self.threads):
            if frame.index not in handed:
                yield frame

    def use(self) -> EngineUse:
        """What decoded the video: NVDEC, or FFmpeg on the CPU (path "fallback" when NVDEC
        began it and failed)."""
        if not self.why_cpu and not self.failed:
            return EngineUse("nvdec", "uint8", f"PyNvVideoCodec {version()}",
                             device=self.device)
        return EngineUse("ffmpeg", "uint8", f"PyAV {av.__version__}",
                         path="fallback" if self.failed else "engine",
                         fallback_active=bool(self.failed), device="cpu")
