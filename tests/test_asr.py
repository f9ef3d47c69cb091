"""Speech: one Whisper implementation (PyTorch, from the package's CTranslate2 weights)
and one decoding rule (greedy, with Whisper's timestamp rules) on every device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import phoneclips
import pytest
from conftest import SAMPLE
from textmetrics import wer

from reelscope.errors import ModelError
from reelscope.tasks.asr import SpeechRecognizer, prepare_model_dir
from reelscope.tasks.whisper import read_ct2
from reelscope.video.decode import decode_audio
from reelscope.video.media import Limits, probe

SAMPLE_SPEECH = ("Hello everyone. This is my cat. Every morning I make a cup of coffee. "
                 "Today is a wonderful day and I am very happy.")


@pytest.fixture(scope="module")
def model_dir(cache_dir: Path) -> Path:
    return prepare_model_dir(cache_dir)


@pytest.fixture(scope="module")
def sample_audio() -> np.ndarray:
    return decode_audio(probe(SAMPLE, Limits(180, 4096, 512)))


def test_the_sample_is_heard_word_for_word(model_dir: Path, sample_audio: np.ndarray) -> None:
    recognizer = SpeechRecognizer(model_dir)
    got = recognizer.transcribe(sample_audio)
    assert got.language == "en" and got.text == SAMPLE_SPEECH
    starts = [s.start_s for s in got.segments]
    assert starts == sorted(starts) and 0 <= starts[0] < 2 and got.segments[-1].end_s <= 12.0
    use = recognizer.engine
    assert (use.backend, use.precision, use.device) == ("torch-eager", "fp32", "cpu")


def test_silence_gives_an_empty_transcript(model_dir: Path) -> None:
    assert SpeechRecognizer(model_dir).transcribe(np.zeros(16000, np.float32)).text == ""


def test_damaged_weights_file_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    cut = tmp_path / "model.bin"
    cut.write_bytes((model_dir / "model.bin").read_bytes()[:1_000_000])
    with pytest.raises(ModelError, match="cannot read the Whisper weights"):
        read_ct2(cut)


def test_speech_longer_than_a_window_loses_no_words_at_its_boundaries(model_dir: Path) -> None:
    # 82 s of LibriVox readings (Debian's pocketsphinx-testdata), three times over: three
    # 30 s windows, each ending inside a sentence or just after one. Before the windows
    # resumed where the model stopped, the words at their edges were lost (WER 0.14).
    parts, said = [], []
    for _ in range(3):
        for samples, text in phoneclips.librivox():
            parts += [samples, np.zeros(8000, np.int16)]
            said.append(text)
    audio = np.concatenate(parts).astype(np.float32) / 32768
    heard = SpeechRecognizer(model_dir).transcribe(audio)
    assert wer(" ".join(said), heard.text) <= 0.1, heard.text
    assert heard.segments[-1].end_s > 78  # the last reading is heard to its end


@pytest.mark.gpu
def test_a_gpu_hears_what_the_cpu_hears(model_dir: Path, sample_audio: np.ndarray) -> None:
    """fp16 on the GPU, fp32 on the CPU: the same words at the same times."""
    cpu = SpeechRecognizer(model_dir).transcribe(sample_audio)
    gpu = SpeechRecognizer(model_dir, "cuda:0", "fp16").transcribe(sample_audio)
    assert gpu.text == cpu.text == SAMPLE_SPEECH
    assert [(s.start_s, s.end_s) for s in gpu.segments] == [
        (s.start_s, s.end_s) for s in cpu.segments]


@pytest.mark.parametrize("seconds", [0.5, 29.99, 30.0, 30.01, 60.0, 95.3, 181.7])
def test_log_mel_in_chunks_is_faster_whispers(seconds: float) -> None:
    """The features of a long clip are computed 30 s at a time (bounded memory) and are
    those faster-whisper computes over the whole of it (to float rounding: the filter
    bank's matrix product over a chunk may round differently)."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from reelscope.tasks.asr import log_mel

    features = FeatureExtractor(feature_size=80)
    rng = np.random.default_rng(7)
    audio = (rng.standard_normal(round(seconds * 16000)) * 0.1).astype(np.float32)
    audio[: len(audio) // 3] *= 0.01  # quiet and loud parts: the clamp to max - 8 matters
    ours, theirs = log_mel(audio, features), features(audio)
    assert ours.shape == theirs.shape
    assert float(np.abs(ours - theirs).max()) < 1e-5


def test_windows_arriving_while_a_batch_runs_are_decoded_together() -> None:
    """A window that finds no batch running is decoded at once; the windows that arrive
    meanwhile wait and go together in the next batch, each getting its own answer; a
    failing batch fails its windows only."""
    import threading

    from reelscope.tasks.asr import WindowBatches

    first_running, release = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def decode(mels: np.ndarray, languages: list[str]) -> list[tuple[str, list[int]]]:
        batches.append(languages)
        if len(batches) == 1:
            first_running.set()
            release.wait(30)
        if "xx" in languages:
            raise ModelError("no such language")
        return [(language or "en", [int(m[0, 0])])
                for m, language in zip(mels, languages, strict=True)]

    windows = WindowBatches(decode, max_batch=2)
    got: dict[int, tuple[str, list[int]]] = {}

    def ask(i: int, language: str) -> None:
        got[i] = windows.decode(np.full((80, 3000), i, np.float32), language)

    first = threading.Thread(target=ask, args=(1, ""))
    first.start()
    assert first_running.wait(30)
    later = [threading.Thread(target=ask, args=(i, lang))
             for i, lang in ((2, "zh"), (3, ""), (4, "fr"))]
    for waiting, t in enumerate(later, 1):  # each waits behind the first batch, in turn
        t.start()
        while len(windows._waiting) < waiting:
            threading.Event().wait(0.01)
    release.set()
    for t in [first, *later]:
        t.join(30)
    assert got == {1: ("en", [1]), 2: ("zh", [2]), 3: ("en", [3]), 4: ("fr", [4])}
    assert batches == [[""], ["zh", ""], ["fr"]]  # at most two a batch, in arrival order
    stats = windows.stats()
    assert (stats.items, stats.batches, stats.sizes) == (4, 3, [1, 2, 1])
    with pytest.raises(ModelError, match="no such language"):
        windows.decode(np.zeros((80, 3000), np.float32), "xx")
    assert windows.decode(np.full((80, 3000), 5, np.float32), "de") == ("de", [5])


def test_a_speech_worker_hears_videos_sent_at_once_as_each_alone(
        model_dir: Path, sample_audio: np.ndarray) -> None:
    """The GPU's speech worker process (here on the CPU): transcripts asked for at once
    all go through its window batches, and each is what the recognizer hears alone; a
    worker that dies is one clear error."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from reelscope.gpu.speech import SpeechProcesses

    readings = [samples.astype(np.float32) / 32768 for samples, _ in phoneclips.librivox()]
    audios = [sample_audio, readings[0], readings[1]]
    alone = SpeechRecognizer(model_dir)
    want = [alone.transcribe(a) for a in audios]
    workers = SpeechProcesses(model_dir, "cpu", "fp32", processes=1)
    try:
        with ThreadPoolExecutor(len(audios)) as pool:
            heard = list(pool.map(workers.transcribe, audios))
        assert [h.text for h in heard] == [w.text for w in want]
        assert [h.segments for h in heard] == [w.segments for w in want]
        assert heard[0].text == SAMPLE_SPEECH
        stats = workers.stats()
        assert stats.items == 3  # a window each, through the batches
        pid = workers.workers[0].process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ModelError, match="speech worker process"):
            workers.transcribe(sample_audio)
    finally:
        workers.close()
