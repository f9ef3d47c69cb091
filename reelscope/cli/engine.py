"""``reelscope engine build | inspect | bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reelscope.config import Settings
from reelscope.engine import artifact, bench, compiler
from reelscope.engine.backends import ALL_NAMES, UNTESTED, describe, present
from reelscope.engine.options import (
    NORMALIZATIONS,
    PRECISIONS,
    BuildOptions,
    CalibrationOptions,
    GateThresholds,
    Profile,
)
from reelscope.errors import ConfigError

out = Console(soft_wrap=True)
err = Console(stderr=True)


def _say(message: str) -> None:
    err.print(f"[dim]>>[/dim] {message}", highlight=False)


@click.group("engine")
def engine_group() -> None:
    """Compile models into optimized engines; inspect and benchmark them."""


@engine_group.command("build")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="engine file to write")
@click.option("--backend", type=click.Choice(("auto", *ALL_NAMES)), default="auto",
              show_default=True,
              help="auto picks the best tested backend present for the device; backends: "
                   + ", ".join(describe(n) for n in ALL_NAMES))
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--profile", "profiles", multiple=True, metavar="NAME=MIN:OPT:MAX",
              help="shapes of a dynamic input, e.g. input=1x3x224x224:8x3x224x224:32x3x224x224")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="folder of images and/or videos, or one video: int8 calibration and the "
                   "gate's held-out inputs")
@click.option("--gate-inputs", type=click.Path(path_type=Path), default=None,
              help="pictures for the accuracy gate only (default: held out from --calibration)")
@click.option("--samples", type=int, default=CalibrationOptions.samples, show_default=True,
              help="calibration inputs to generate")
@click.option("--monitor-reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="pictures or videos like the traffic the engine will serve: the fp32 "
                   "reference's confidences on them are stored for drift monitoring "
                   "(default: the held-out inputs)")
@click.option("--holdout", type=int, default=CalibrationOptions.holdout, show_default=True,
              help="held-out inputs for the accuracy gate")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="imagenet",
              show_default=True, help="how pictures are scaled for the model: imagenet "
                                      "mean/std, symmetric [-1, 1] or unit [0, 1]")
@click.option("--class-output", "class_outputs", multiple=True,
              help="outputs holding class scores (default: outputs named like logits/probs)")
@click.option("--min-top1", type=float, default=None, help="gate: top-1 agreement (fp16/bf16)")
@click.option("--min-top1-confident", type=float, default=None,
              help="gate: top-1 agreement on confident inputs (int8)")
@click.option("--min-cosine", type=float, default=None, help="gate: feature cosine similarity")
@click.option("--int8-fallback/--no-int8-fallback", default=True, show_default=True,
              help="int8 under the gate: retry with the most sensitive layers in fp32")
@click.option("--autotune/--no-autotune", default=False, show_default=True,
              help="kernel auto-tuning (torch: Inductor max-autotune; slow)")
@click.option("--cuda-graphs/--no-cuda-graphs", default=True, show_default=True)
@click.option("--threads", type=int, default=0, help="CPU threads; 0 = all")
def build_cmd(model: str, output: Path, backend: str, precision: str, profiles: tuple[str, ...],
              device: str, calibration: Path | None, gate_inputs: Path | None, samples: int,
              monitor_reference: Path | None, holdout: int,
              normalize: str, class_outputs: tuple[str, ...], min_top1: float | None,
              min_top1_confident: float | None, min_cosine: float | None,
              int8_fallback: bool, autotune: bool, cuda_graphs: bool, threads: int) -> None:
    """Compile MODEL (an .onnx file, or module:callable returning a torch module)."""
    gate = GateThresholds()
    if min_top1 is not None:
        gate = _replace(gate, top1=min_top1)
    if min_top1_confident is not None:
        gate = _replace(gate, top1_confident_int8=min_top1_confident)
    if min_cosine is not None:
        gate = _replace(gate, cosine=min_cosine)
    options = BuildOptions(
        backend=backend,
        precision=precision,  # type: ignore[arg-type]
        profiles=tuple(Profile.parse(p) for p in profiles),
        device=device,
        calibration=CalibrationOptions(
            source=str(calibration.resolve()) if calibration else "",
            holdout_source=str(gate_inputs.resolve()) if gate_inputs else "", samples=samples,
            reference_source=str(monitor_reference.resolve()) if monitor_reference else "",
            holdout=holdout, normalization=normalize,  # type: ignore[arg-type]
        ),
        gate=gate,
        class_outputs=class_outputs or None,
        threads=threads,
        int8_fallback=int8_fallback,
        autotune=autotune,
        cuda_graphs=cuda_graphs,
    )
    manifest = compiler.build(model, output, options, cache_dir=_cache(), progress=_say)
    out.print(
        f"wrote {output}: {manifest.backend} {manifest.precision}, "
        f"{manifest.payload_size / 1e6:.1f} MB, built in {manifest.build_seconds:.1f} s"
    )


def _replace(gate: GateThresholds, **changes: Any) -> GateThresholds:
    import dataclasses

    for key, value in changes.items():
        if not 0 <= value <= 1:
            raise ConfigError(f"gate threshold {key} must be between 0 and 1, got {value}")
    return dataclasses.replace(gate, **changes)


def _cache() -> Path:
    return Settings.from_env().cache_path


@engine_group.command("inspect")
@click.argument("engine", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def inspect_cmd(engine: Path, as_json: bool) -> None:
    """Show an engine's manifest: source, backend, device, profiles, accuracy."""
    manifest, _ = artifact.read(engine)
    if as_json:
        click.echo(manifest.to_json())
        return
    m = manifest
    out.print(f"[bold]{engine}[/bold]  {m.backend} {m.precision}  "
              f"({m.payload_format}, {m.payload_size / 1e6:.1f} MB)")
    out.print(f"source    {m.source.kind} {m.source.location}  sha256 {m.source.sha256[:16]}…")
    out.print(f"built     {m.built_at} in {m.build_seconds:.1f} s")
    out.print("bound to  " + ", ".join(f"{k}={v}" for k, v in m.environment.items()))
    out.print("inputs    " + ", ".join(
        f"{s.name} {s.dtype} {'x'.join('?' if d is None else str(d) for d in s.shape)}"
        for s in m.inputs))
    out.print("outputs   " + ", ".join(m.outputs))
    out.print("profiles  " + ", ".join(p.text() for p in m.profiles))
    engine_notes = m.options.get("engine", {})
    if engine_notes:
        out.print("engine    " + ", ".join(f"{k}={v}" for k, v in engine_notes.items()))
    if m.monitor:
        values = m.monitor.get("values", [])
        median = values[len(values) // 2] if values else float("nan")
        out.print(f"monitor   drift reference: {len(values)} top-1 confidences of "
                  f"{m.monitor.get('output')!r} (median {median:.3f}) from "
                  f"{m.monitor.get('origin')}")
    acc = m.accuracy
    if acc:
        table = Table("output", "kind", "metrics", title=(
            f"accuracy gate: {'passed' if acc.get('passed') else 'FAILED'} on "
            f"{acc.get('inputs')} held-out inputs ({acc.get('origin')})"))
        for name, o in acc.get("outputs", {}).items():
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in o.items()
                                if isinstance(v, float))
            table.add_row(name, o.get("kind", ""), metrics)
        out.print(table)


@engine_group.command("bench")
@click.argument("engine", type=click.Path(path_type=Path))
@click.option("--batch", "batches", default="1,8,32", show_default=True,
              help="comma-separated batch sizes")
@click.option("--min-time", type=float, default=2.0, show_default=True,
              help="seconds to time each batch size for")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=0, help="CPU threads; 0 = all")
@click.option("--rebuild", type=click.Choice(("auto", "never")), default="auto",
              show_default=True, help="rebuild an engine made for another environment")
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(engine: Path, batches: str, min_time: float, device: str, threads: int,
              rebuild: str, as_json: bool) -> None:
    """Latency and throughput of ENGINE per batch size (random inputs)."""
    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--batch takes integers separated by commas, got {batches!r}") from None
    loaded = compiler.load(engine, rebuild=rebuild, device=device,  # type: ignore[arg-type]
                           threads=threads, cache_dir=_cache(), progress=_say)
    with loaded:
        rows = bench.bench(loaded.runner, loaded.manifest.profiles[0], sizes,
                           min_time_s=min_time)
    if as_json:
        click.echo(json.dumps({"engine": str(engine), "backend": loaded.manifest.backend,
                               "precision": loaded.manifest.precision,
                               "load_seconds": loaded.load_seconds,
                               "rebuilt": loaded.rebuilt,
                               "compile_cache_hits": getattr(loaded.runner, "cache_hits", None),
                               "compile_cache_misses": getattr(loaded.runner, "cache_misses",
                                                               None),
                               "rows": [r.to_dict() for r in rows]}, indent=2))
        return
    table = Table("batch", "median ms", "p90 ms", "items/s", "runs", title=(
        f"{engine}: {loaded.manifest.backend} {loaded.manifest.precision} "
        f"(loaded in {loaded.load_seconds:.2f} s)"))
    for r in rows:
        table.add_row(str(r.batch), f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}",
                      f"{r.items_per_s:,.0f}", str(r.iterations))
    out.print(table)


@engine_group.command("backends")
def backends_cmd() -> None:
    """List the engine backends, whether their libraries import here, and which are
    untested (never run on a real machine; auto never picks them)."""
    here = present()
    for name in ALL_NAMES:
        status = "present" if name in here else "absent"
        click.echo(f"{name}\t{status}" + ("\tuntested" if name in UNTESTED else ""))
