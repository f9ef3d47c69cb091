"""Shared fixtures: the sample clip, clips made on the fly, and a CLI runner."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"
sys.path.insert(0, str(ROOT / "scripts"))

import clipgen  # noqa: E402


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared model files (ONNX export, joined Whisper) shared by the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def run_cli(cache_dir: Path) -> Callable[..., CliResult]:
    def run(*args: str, db: str | Path, env: dict[str, str] | None = None) -> CliResult:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("REELSCOPE_")}
        full_env.update({"REELSCOPE_DB": str(db), "REELSCOPE_CACHE_DIR": str(cache_dir)})
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "reelscope", *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def truth() -> dict[str, Any]:
    return json.loads((ROOT / "samples" / "sample.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def reencoded_copy(clips: Path) -> Path:
    """The sample re-uploaded: resized to 360x640 at a much lower bitrate."""
    return clipgen.transcode(SAMPLE, clips / "copy.mp4", 360, 640, crf=38, audio_bitrate=24000)


@pytest.fixture(scope="session")
def different_clip(clips: Path) -> Path:
    """Another clip of the same format: other photos, captions and speech."""
    from skimage import data

    spec = clipgen.ClipSpec(
        scenes=(
            clipgen.Scene(data.hubble_deep_field(), 4.0, ("夜空中的星星", "Stars at night")),
            clipgen.Scene(
                data.immunohistochemistry(), 4.0, ("显微镜下的细胞", "Cells under glass")
            ),
        ),
        speech="The weather report says heavy rain will arrive tomorrow afternoon.",
    )
    return clipgen.write_clip(clips / "different.mp4", spec)


def db_dump(path: Path) -> list[str]:
    """Every statement needed to rebuild the SQLite database: equal dumps, equal databases."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())
