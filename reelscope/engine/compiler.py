"""Build an engine from a model, gate it against fp32, save it; load it back, checked.

    manifest = build("model.onnx", Path("model.engine"), BuildOptions(precision="int8",
                     calibration=CalibrationOptions(source="frames/")))
    with load(Path("model.engine")) as engine:
        outputs = engine.infer({"input": batch})
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np

from reelscope.engine import artifact, backends, calibration, gate
from reelscope.engine.base import BuildJob, Progress, Runner
from reelscope.engine.manifest import Manifest, differences
from reelscope.engine.options import (
    BuildOptions,
    CalibrationOptions,
    GateThresholds,
    Profile,
    RebuildPolicy,
)
from reelscope.engine.source import ModelSource
from reelscope.errors import (
    AccuracyGateError,
    ConfigError,
    EngineMismatchError,
    UnsupportedBuildError,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
GATE_BATCH = 32
# environment fields recorded for people, not compared on load
INFORMATIONAL = frozenset({"cpu", "driver", "torch_build"})


def _no_progress(message: str) -> None:
    log.info("%s", message)


def resolve_profiles(source: ModelSource, given: tuple[Profile, ...]) -> tuple[Profile, ...]:
    """A profile for every input: the given ones, or the batch axis 1..8..32 by default
    when it is the only dynamic axis; static inputs are fixed."""
    specs = source.input_specs(given)
    names = {s.name for s in specs}
    unknown = [p.name for p in given if p.name not in names]
    if unknown:
        raise ConfigError(f"profile for unknown input {unknown[0]!r}; inputs are {sorted(names)}")
    profiles = []
    for spec in specs:
        p = next((p for p in given if p.name == spec.name), None)
        if p is not None:
            if len(p.min) != len(spec.shape) or any(
                d is not None and (lo != d or hi != d)
                for d, lo, hi in zip(spec.shape, p.min, p.max, strict=True)
            ):
                raise ConfigError(
                    f"profile {p.text()} does not fit input {spec.name!r} of shape "
                    f"{'x'.join('?' if d is None else str(d) for d in spec.shape)}"
                )
            profiles.append(p)
        elif all(d is not None for d in spec.shape[1:]):
            rest = tuple(int(d) for d in spec.shape[1:] if d is not None)
            lo = spec.shape[0] or 1
            opt = spec.shape[0] or 8
            hi = spec.shape[0] or DEFAULT_MAX_BATCH
            profiles.append(Profile(spec.name, (lo, *rest), (opt, *rest), (hi, *rest)))
        else:
            raise ConfigError(
                f"input {spec.name!r} has dynamic dimensions besides the batch: give "
                f"--profile {spec.name}=MIN:OPT:MAX"
            )
    return tuple(profiles)


def prepare_inputs(source: ModelSource, profiles: tuple[Profile, ...], options: BuildOptions,
                   data: Iterable[np.ndarray] | None) -> calibration.InputSet | None:
    """Calibration and held-out inputs for the first input, from the options' source
    or from ``data``; None when neither is given."""
    if not options.calibration.source and data is None and not options.calibration.holdout_source:
        return None
    if len(profiles) != 1 or len(profiles[0].opt) != 4:
        raise UnsupportedBuildError(
            "calibration from pictures needs a model with one image input (N, C, H, W)"
        )
    shape = profiles[0].opt[1:]
    chw = (int(shape[0]), int(shape[1]), int(shape[2]))
    opts = options.calibration
    if data is None and not opts.source:  # gate pictures only (fp32/fp16 builds)
        pictures, digest = calibration.pictures_from_path(Path(opts.holdout_source))
        return calibration.make_inputs(pictures, chw, opts, digest, opts.holdout_source)
    if data is not None:
        inputs = calibration.from_arrays(data, chw, opts)
    else:
        pictures, digest = calibration.pictures_from_path(Path(opts.source))
        inputs = calibration.make_inputs(pictures, chw, opts, digest, opts.source)
    if not opts.holdout_source:
        return inputs
    pictures, digest = calibration.pictures_from_path(Path(opts.holdout_source))
    gate_set = calibration.make_inputs(pictures, chw, opts, digest, opts.holdout_source)
    return dataclasses.replace(
        inputs, holdout=np.concatenate([gate_set.calibration, gate_set.holdout])[: opts.holdout],
        origin=f"{inputs.origin}; gate inputs from {gate_set.origin}")


def run_batched(runner: Runner, name: str, data: np.ndarray, max_batch: int
                ) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(data), max_batch):
        for key, value in runner.infer({name: data[i : i + max_batch]}).items():
            parts.setdefault(key, []).append(np.asarray(value, dtype=np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}


def reference_runner(source: ModelSource, profiles: tuple[Profile, ...], threads: int,
                     optimize: bool = False) -> Runner:
    """The fp32 reference: ONNX Runtime with no graph rewriting for an ONNX model (or,
    with ``optimize``, ONNX Runtime's own fp32 optimizations, made afresh from the source),
    eager PyTorch on the CPU for a module."""
    if source.kind == "onnx":
        from reelscope.engine.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(Path(source.location), threads=threads, optimize=optimize,
                                 profiles=profiles)
    from reelscope.engine.eager import EagerRunner

    return EagerRunner(source.torch_module(), source.input_names(profiles),
                       source.output_names, profiles)


def build(source: ModelSource | str | Path, output: Path, options: BuildOptions | None = None,
          *, data: Iterable[np.ndarray] | None = None, cache_dir: Path | None = None,
          progress: Progress = _no_progress) -> Manifest:
    """Compile, gate and save an engine. Nothing is written unless the gate passes."""
    started = time.perf_counter()
    options = options or BuildOptions()
    src = source if isinstance(source, ModelSource) else ModelSource.resolve(source)
    _ = src.sha256  # of the model as given, before any backend converts it
    device = backends.resolve_device(options.device)
    builder_cls, why = backends.pick(options.backend, device)
    progress(f"backend: {why}")
    builder_cls.check_precision(options.precision, device)
    profiles = resolve_profiles(src, options.profiles)
    inputs = prepare_inputs(src, profiles, options, data)
    if options.precision in gate.LOW_PRECISIONS and inputs is None:
        raise UnsupportedBuildError(
            f"{options.precision} needs calibration inputs: give --calibration PATH "
            "(a folder of images or videos, or one video)"
        )
    name = profiles[0].name
    class_outputs = options.class_outputs  # as given, for the monitor reference
    if inputs is not None:
        holdout, origin = inputs.holdout, inputs.origin
    else:  # random inputs carry no class meaning: every output is compared as features
        holdout = calibration.random_inputs(profiles[0].opt, min(64, options.calibration.holdout),
                                            options.calibration.seed)
        origin = "random normal inputs (no calibration pictures given)"
        options = dataclasses.replace(options, class_outputs=())
    threads = options.threads or 0
    max_batch = min(GATE_BATCH, profiles[0].max[0])
    with tempfile.TemporaryDirectory(prefix="reelscope-build-") as tmp:
        workdir = Path(tmp)
        progress(f"fp32 reference on {len(holdout)} held-out inputs")
        with reference_runner(src, profiles, threads or os.cpu_count() or 1) as ref:
            reference = run_batched(ref, name, holdout, max_batch)
        builder = builder_cls()
        job = BuildJob(src, options, profiles, inputs, workdir, cache_dir, progress)
        report = None
        environment = builder_cls.environment(device)
        for candidate in builder.candidates(job):
            manifest = _manifest(src, builder_cls.NAME, builder_cls.PAYLOAD, options, profiles,
                                 environment, candidate.notes, inputs)
            with builder.runner(candidate.payload, manifest, device, threads) as runner:
                got = run_batched(runner, name, holdout, max_batch)
            report = gate.evaluate(reference, got, options.precision, options.gate, origin,
                                   options.class_outputs)
            progress(f"accuracy gate: {'pass' if report.passed else 'FAIL'}: {report.summary()}")
            if report.passed:
                monitor = _monitor_reference(
                    src, profiles, dataclasses.replace(options, class_outputs=class_outputs),
                    reference if inputs is not None else None, origin, threads, max_batch,
                    progress)
                manifest = dataclasses.replace(
                    manifest, accuracy=report.to_dict(), monitor=monitor,
                    build_seconds=round(time.perf_counter() - started, 2))
                return artifact.write(output, manifest, candidate.payload)
        assert report is not None, "a builder yields at least one candidate"
        raise AccuracyGateError(
            f"{options.precision} engine rejected by the accuracy gate, no engine written: "
            + "; ".join(report.failures)
        )


def _monitor_reference(src: ModelSource, profiles: tuple[Profile, ...], options: BuildOptions,
                       reference: Mapping[str, np.ndarray] | None, origin: str, threads: int,
                       max_batch: int, progress: Progress) -> dict[str, Any]:
    """The fp32 reference's top-1 confidences on validation inputs (the first class output),
    stored with the engine so that online drift can be measured against them: on the
    centre crops of ``reference_source`` when given, else on the held-out pictures
    (none when the gate ran on random inputs)."""
    from reelscope.monitor.drift import top1_confidence

    opts = options.calibration
    outputs = [k for k in src.output_names if gate.is_class_output(k, options.class_outputs)]
    if not outputs:
        return {}
    name = outputs[0]
    if opts.reference_source:
        pictures, _ = calibration.pictures_from_path(Path(opts.reference_source))
        shape = profiles[0].opt[1:]
        chw = (int(shape[0]), int(shape[1]), int(shape[2]))
        data = calibration.centre_inputs(pictures, chw, opts.normalization)
        progress(f"monitor reference: fp32 confidences on {len(data)} centre crops")
        with reference_runner(src, profiles, threads or os.cpu_count() or 1) as ref:
            values = top1_confidence(run_batched(ref, profiles[0].name, data, max_batch)[name])
        origin = f"{opts.reference_source}: {len(pictures)} pictures, centre crops"
    elif reference is not None:
        values = top1_confidence(reference[name])
    else:
        return {}
    return {
        "output": name,
        "confidence": "top1_probability",
        "origin": origin,
        "values": [round(float(v), 5) for v in np.sort(values)],
    }


def _manifest(src: ModelSource, backend: str, payload_format: str, options: BuildOptions,
              profiles: tuple[Profile, ...], environment: dict[str, str],
              notes: Mapping[str, Any], inputs: calibration.InputSet | None) -> Manifest:
    return Manifest(
        name=src.name,
        backend=backend,
        precision=options.precision,
        source=src.record(),
        environment=environment,
        inputs=src.input_specs(profiles),
        outputs=src.output_names,
        profiles=profiles,
        payload_format=payload_format,
        payload_size=0,
        payload_sha256="",
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=0.0,
        options={
            "build": options_to_dict(options),
            "calibration_inputs": inputs.origin if inputs else "",
            "engine": dict(notes),
        },
    )


def options_to_dict(options: BuildOptions) -> dict[str, Any]:
    d = dataclasses.asdict(options)
    d["profiles"] = [p.text() for p in options.profiles]
    return d


def options_from_dict(d: Mapping[str, Any]) -> BuildOptions:
    d = dict(d)
    d["profiles"] = tuple(Profile.parse(p) for p in d.get("profiles", ()))
    d["calibration"] = CalibrationOptions(**d.get("calibration", {}))
    d["gate"] = GateThresholds(**d.get("gate", {}))
    if d.get("class_outputs") is not None:
        d["class_outputs"] = tuple(d["class_outputs"])
    return BuildOptions(**d)


@dataclass
class Engine:
    """A loaded engine: its manifest and a runner (``with engine:`` activates it)."""

    path: Path
    manifest: Manifest
    runner: Runner
    rebuilt: bool = False
    load_seconds: float = 0.0

    def __enter__(self) -> Self:
        start = time.perf_counter()
        self.runner.__enter__()
        self.load_seconds += time.perf_counter() - start
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.__exit__(*exc)

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.infer(feed)


def load(path: Path, *, rebuild: RebuildPolicy = "auto", device: str = "auto",
         threads: int = 0, cache_dir: Path | None = None,
         progress: Progress = _no_progress) -> Engine:
    """Open an engine for this machine. One built for another environment is rebuilt
    from its recorded source model when ``rebuild="auto"`` and the source is still
    there unchanged; otherwise :class:`EngineMismatchError` names what differs."""
    start = time.perf_counter()
    path = Path(path)
    manifest, _ = artifact.read_manifest(path)
    where = backends.resolve_device(device if device != "auto" else _device_of(manifest))
    diffs = _mismatch(manifest, where)
    rebuilt = False
    if diffs:
        reason = f"{path} was built for another environment: " + "; ".join(diffs)
        if rebuild != "auto":
            raise EngineMismatchError(reason + " (rebuild it, or allow --rebuild auto)", diffs)
        src = _recorded_source(manifest, reason, diffs)
        progress(f"rebuilding: {'; '.join(diffs)}")
        options = dataclasses.replace(options_from_dict(manifest.options["build"]), device=where)
        build(src, path, options, cache_dir=cache_dir, progress=progress)
        rebuilt = True
    manifest, payload = artifact.read(path)
    builder = backends.get(manifest.backend)()
    runner = builder.runner(payload, manifest, where, threads)
    return Engine(path, manifest, runner, rebuilt, time.perf_counter() - start)


def fallback_runner(engine: Engine, threads: int = 0) -> Runner:
    """The fp32 reference of the engine's recorded source model (not yet activated): the path
    a monitored task falls back to, and the shadow check's yardstick. ONNX Runtime fp32
    with its standard graph optimizations, made from the source model (nothing of the
    engine's file is used), so that serving from it costs about what an fp32 engine does.
    EngineMismatchError when the source is gone or changed."""
    src = _recorded_source(engine.manifest, f"{engine.path} has no fp32 fallback", ())
    return reference_runner(src, engine.manifest.profiles, threads or os.cpu_count() or 1,
                            optimize=True)


def _device_of(manifest: Manifest) -> str:
    return "cuda" if "gpu" in manifest.environment else "cpu"


def _mismatch(manifest: Manifest, device: str) -> tuple[str, ...]:
    try:
        builder = backends.get(manifest.backend)
    except (UnsupportedBuildError, ConfigError):
        return (f"backend: built with {manifest.backend!r}, which is not installed here",)
    here = builder.environment(device)
    built = {k: v for k, v in manifest.environment.items() if k not in INFORMATIONAL}
    return differences(built, {k: v for k, v in here.items() if k not in INFORMATIONAL})


def _recorded_source(manifest: Manifest, reason: str, diffs: tuple[str, ...]) -> ModelSource:
    rec = manifest.source
    src = ModelSource(rec.kind, rec.location)
    if rec.kind == "onnx" and not Path(rec.location).is_file():
        raise EngineMismatchError(
            reason + f"; cannot rebuild: its source model {rec.location} is gone", diffs)
    try:
        same = src.sha256 == rec.sha256
    except ConfigError as exc:
        raise EngineMismatchError(reason + f"; cannot rebuild: {exc}", diffs) from exc
    if not same:
        raise EngineMismatchError(
            reason + f"; cannot rebuild: its source model {rec.location} has changed", diffs)
    return src
