"""Whisper in PyTorch from the CPU path's own CTranslate2 weights: the same transcript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE
from textmetrics import wer

from reelscope.errors import ModelError
from reelscope.tasks.asr import SpeechRecognizer, prepare_model_dir
from reelscope.tasks.asr_torch import TorchSpeechRecognizer, read_ct2
from reelscope.video.decode import decode_audio
from reelscope.video.media import Limits, probe


@pytest.fixture(scope="module")
def model_dir(cache_dir: Path) -> Path:
    return prepare_model_dir(cache_dir)


def _audio(path: Path) -> np.ndarray:
    return decode_audio(probe(path, Limits(180, 4096, 512)))


@pytest.mark.parametrize("clip", ["sample", "different"])
def test_torch_whisper_transcribes_as_the_cpu_path(
    model_dir: Path, clip: str, different_clip: Path
) -> None:
    audio = _audio(SAMPLE if clip == "sample" else different_clip)
    cpu = SpeechRecognizer(model_dir, threads=2).transcribe(audio)
    torch_path = TorchSpeechRecognizer(model_dir, device="cpu", dtype="fp32")
    got = torch_path.transcribe(audio)
    assert got.language == cpu.language == "en"
    assert got.text == cpu.text
    assert [(s.start_s, s.end_s) for s in got.segments] == [
        (s.start_s, s.end_s) for s in cpu.segments
    ]
    assert torch_path.engine.backend == "torch"


def test_silence_gives_an_empty_transcript(model_dir: Path) -> None:
    assert TorchSpeechRecognizer(model_dir).transcribe(np.zeros(16000, np.float32)).text == ""


def test_damaged_weights_file_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    cut = tmp_path / "model.bin"
    cut.write_bytes((model_dir / "model.bin").read_bytes()[:1_000_000])
    with pytest.raises(ModelError, match="cannot read the Whisper weights"):
        read_ct2(cut)


def test_analyze_with_the_torch_backend(
    run_cli: Any, tmp_path: Path, truth: dict[str, Any]
) -> None:
    result = run_cli("analyze", str(SAMPLE), "--json", "--asr-backend", "torch",
                     db=tmp_path / "db.sqlite")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["engines"]["asr"]["backend"] == "torch"
    assert report["transcript"]["text"] == (
        "Hello everyone. This is my cat. Every morning I make a cup of coffee. "
        "Today is a wonderful day and I am very happy."
    )
    assert wer(truth["speech"], report["transcript"]["text"]) <= 0.2
