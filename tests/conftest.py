"""Shared fixtures: the sample clip, clips made on the fly, and a CLI runner."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"
# Set by .ci/run: a service or tool a test needs (PostgreSQL, Chromium) that is missing
# fails the run instead of skipping it, and no test may skip unless it is marked ``gpu``.
IN_CI = bool(os.environ.get("CI"))


def unavailable(what: str) -> None:
    """``what`` a test needs is missing: skip it here, fail it in CI."""
    if IN_CI:
        pytest.fail(f"{what} (required in CI)", pytrace=False)
    pytest.skip(what)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Tests marked ``gpu`` are skipped where no CUDA GPU is visible."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """In CI, a skipped test (other than a GPU test on a machine without one) fails the run."""
    if not IN_CI:
        return
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "gpu" not in getattr(r, "keywords", {})]
    if skipped:
        terminalreporter.write_line(
            f"CI: {len(skipped)} tests were skipped: " + ", ".join(r.nodeid for r in skipped),
            red=True)
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED


def faststart_copy(src: Path, dst: Path) -> Path:
    """``src`` remuxed with its index at the front ('fast start'), packets copied."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream]
                out.mux(packet)
    return dst
sys.path.insert(0, str(ROOT / "scripts"))

import clipgen  # noqa: E402
from service_harness import Server  # noqa: E402


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared model files (ONNX export, joined Whisper) shared by the whole session;
    ``REELSCOPE_TEST_CACHE`` names one prepared beforehand (the GPU machine's, where the
    packages that ship Whisper's parts are not installed)."""
    given = os.environ.get("REELSCOPE_TEST_CACHE")
    return Path(given) if given else tmp_path_factory.mktemp("cache")


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


# the service on loopback: one fresh database per server, on SQLite and on PostgreSQL

PG_ADMIN = os.environ.get(
    "REELSCOPE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FAST = {"job_lease_s": 2, "webhook_backoff_s": 0.2}


@contextmanager
def postgres_databases(prefix: str = "reelscope_test") -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the local PostgreSQL server (the URL of each), dropped at
    the end; the test is unavailable when the server is not reachable."""
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN}: {exc.orig}")
    made: list[str] = []

    def make() -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    try:
        yield make
    finally:
        with admin.connect() as conn:
            for name in made:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def new_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    Callable[[], str]
]:
    """Makes a fresh, empty database of this module's backend per call."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("dbs")
        yield lambda: str(folder / f"{uuid.uuid4().hex[:8]}.db")
        return
    with postgres_databases("reelscope_svc") as make:
        yield make


@pytest.fixture
def make_server(
    new_db: Callable[[], str], tmp_path: Path, cache_dir: Path
) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**settings: Any) -> Server:
        server = Server(new_db(), tmp_path / f"server{len(servers)}", cache_dir,
                        {**FAST, **settings})
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
