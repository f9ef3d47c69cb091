"""reelscope on a real Ray cluster of two nodes on this machine (a head and a second node,
started and stopped here by their process ids), storing in the real PostgreSQL server:
``reelscope batch --ray`` and ``reelscope serve --ray``; videos listed by ``s3://`` URI
come from a real S3 server on this machine (moto's), which every node reaches."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import SAMPLE, postgres_databases, unavailable
from prometheus_client.parser import text_string_to_metric_families
from service_harness import Server, free_port, upload
from test_bad_input import _truncated

pytestmark = [pytest.mark.postgres, pytest.mark.ray]
RAY = Path(sys.executable).parent / "ray"


# the cluster's token: Ray's token authentication is on for a cluster that ``ray start``
# makes, and a new machine has no token file (~/.ray/auth_token) to fall back on
TOKEN = secrets.token_hex(32)
# the S3 server's port, known before the cluster starts: its nodes read s3:// URIs there
S3_PORT = free_port()
S3_ENV = {"FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",  # fsspec's own config
          "AWS_ACCESS_KEY_ID": "reelscope-test", "AWS_SECRET_ACCESS_KEY": "reelscope-test",
          "AWS_DEFAULT_REGION": "us-east-1"}


def _env(**extra: str) -> dict[str, str]:
    """The environment of the cluster's processes and its drivers: token authentication,
    with this test run's token, and the S3 server's address and credentials."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REELSCOPE_", "AWS_", "FSSPEC_"))}
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, **S3_ENV, **extra}


def _alive_nodes(address: str) -> int:
    probe = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, env=_env())
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The node's whole process group (ray start --block, its raylet and workers)."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Cluster:
    address: str
    nodes: list[subprocess.Popen[bytes]]  # the head, then the second node


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not RAY.is_file():
        unavailable(f"Ray is not installed ({RAY})")
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("ray-logs")
    common = ["--block", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    env = _env()
    nodes = [subprocess.Popen(
        [str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false",
         f"--temp-dir={tmp_path_factory.mktemp('ray')}", *common],
        stdout=(logs / "head.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True, env=env)]
    try:
        deadline = time.monotonic() + 180
        while _alive_nodes(address) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()
            time.sleep(1)
        nodes.append(subprocess.Popen(
            [str(RAY), "start", f"--address={address}", *common],
            stdout=(logs / "node.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True, env=env))
        while _alive_nodes(address) < 2:
            assert time.monotonic() < deadline, (logs / "node.log").read_text()
            time.sleep(1)
        yield Cluster(address, nodes)
    finally:
        for node in reversed(nodes):
            _stop(node)


@pytest.fixture
def cluster(ray_cluster: Cluster) -> str:
    return ray_cluster.address


@pytest.fixture(scope="module")
def new_pg() -> Iterator[Callable[[], str]]:
    with postgres_databases("reelscope_ray") as make:
        yield make


def _stored(url: str) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, sha256, report_json FROM videos")).all()
    engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def _analysis_pids() -> list[int]:
    """Processes of Ray workers busy in an analysis actor's ``analyze``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::_Analysis.analyze"):
                pids.append(int(entry.name))
    return pids


def _batch_env(cluster: str, db: str, cache_dir: Path) -> dict[str, str]:
    """Two actors of one CPU (one per node), a video at a time each."""
    return _env(REELSCOPE_DB=db, REELSCOPE_CACHE_DIR=str(cache_dir), REELSCOPE_RAY=cluster,
                REELSCOPE_RAY_CPUS_PER_ACTOR="1", REELSCOPE_BATCH_IN_FLIGHT="1")


def _once_analyzing(run: subprocess.Popen[bytes], act: Callable[[int], None]) -> bool:
    """``act`` on the process of an actor busy with a video, as soon as there is one."""
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        busy = _analysis_pids()
        if busy:
            act(busy[0])
            return True
        time.sleep(0.2)
    return False


def test_a_library_on_two_nodes_survives_a_lost_actor_and_a_rerun_skips_it(
        cluster: str, new_pg: Callable[[], str], cache_dir: Path, tmp_path: Path,
        different_clip: Path, reencoded_copy: Path, truth: dict[str, Any]) -> None:
    pg_url = new_pg()
    library = tmp_path / "library"
    library.mkdir()
    for src, name in ((SAMPLE, "a-cat.mp4"), (different_clip, "b-stars.mp4"),
                      (reencoded_copy, "c-cat-small.mp4"), (SAMPLE, "e-cat-again.mp4")):
        shutil.copy(src, library / name)
    _truncated(library / "d-cut.mp4")
    env = _batch_env(cluster, pg_url, cache_dir)
    cmd = [sys.executable, "-m", "reelscope", "batch", str(library), "--json"]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed = _once_analyzing(run, lambda pid: os.kill(pid, signal.SIGKILL))
    out, err = run.communicate(timeout=600)
    assert killed, err.decode()  # one actor's process died in the middle of a video
    assert run.returncode == 1, err.decode()  # the cut file failed
    summary = json.loads(out)
    stored = _stored(pg_url)
    assert len(stored) == 3 and len({sha for _, sha, _ in stored}) == 3  # each once
    ids = [i for i, _, _ in stored]
    reports = {json.loads(r)["video"]["filename"]: json.loads(r) for _, _, r in stored}
    # the cat twice: whichever path claimed the content first is stored under its name (the
    # killed actor's path is retried later, so it may lose the claim to the other one)
    cats = [name for name in ("a-cat.mp4", "e-cat-again.mp4") if name in reports]
    assert len(cats) == 1, sorted(reports)
    cat = reports[cats[0]]
    cat_id = cat["video"]["id"]
    # four paths, three contents: the same one twice is analyzed once (the killed actor's
    # video, analyzed again, is "done", or "skipped" when it was stored before the kill)
    assert sorted(summary["done"] + summary["skipped"]) == sorted([*ids, cat_id])
    assert cat_id in summary["skipped"]
    assert [Path(f["path"]).name for f in summary["failed"]] == ["d-cut.mp4"]
    assert "truncated or damaged" in summary["failed"][0]["error"]
    assert {e["text"] for e in cat["ocr"]} == {c["text"] for c in truth["captions"]}
    assert "rain" in reports["b-stars.mp4"]["transcript"]["text"]

    (library / "d-cut.mp4").unlink()
    again = subprocess.run(cmd, capture_output=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr.decode()
    rerun = json.loads(again.stdout)
    assert rerun["done"] == [] and rerun["failed"] == []
    assert sorted(rerun["skipped"]) == sorted([*ids, cat_id])
    assert _stored(pg_url) == stored


@dataclass
class S3:
    log: Path  # the server's request log

    def put(self, src: Path, uri: str) -> None:
        import fsspec

        fs = fsspec.filesystem("s3", endpoint_url=S3_ENV["FSSPEC_S3_ENDPOINT_URL"],
                               key=S3_ENV["AWS_ACCESS_KEY_ID"],
                               secret=S3_ENV["AWS_SECRET_ACCESS_KEY"])
        bucket = uri.removeprefix("s3://").split("/")[0]
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.put(str(src), uri)

    def downloads(self, uri: str) -> int:
        """How many times the object's bytes were sent (GET requests for it)."""
        key = uri.removeprefix("s3:/")
        return len(re.findall(rf"GET {re.escape(key)} HTTP", self.log.read_text()))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    server = Path(sys.executable).parent / "moto_server"
    if not server.is_file():
        unavailable(f"moto's S3 server is not installed ({server})")
    log = tmp_path_factory.mktemp("s3") / "requests.log"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(S3_PORT)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Running on" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield S3(log)
    finally:
        _stop(proc)


def test_a_library_in_object_storage_is_fetched_once_per_video(
        cluster: str, s3: S3, new_pg: Callable[[], str], cache_dir: Path, tmp_path: Path,
        different_clip: Path, truth: dict[str, Any]) -> None:
    uris = ["s3://library/a-cat.mp4", "s3://library/b-stars.mp4",
            "s3://library/c-cat-again.mp4"]
    for src, uri in zip((SAMPLE, different_clip, SAMPLE), uris, strict=True):
        s3.put(src, uri)
    listing = tmp_path / "uris.txt"
    listing.write_text("\n".join([*uris, "s3://library/gone.mp4"]) + "\n")
    pg_url = new_pg()
    run = subprocess.run(
        [sys.executable, "-m", "reelscope", "batch", f"@{listing}", "--json"],
        capture_output=True, timeout=600, env=_batch_env(cluster, pg_url, cache_dir))
    assert run.returncode == 1, run.stderr.decode()  # one URI names nothing
    summary = json.loads(run.stdout)
    reports = {json.loads(r)["video"]["filename"]: json.loads(r)
               for _, _, r in _stored(pg_url)}
    # the cat twice is analyzed once, under the name of whichever path claimed it first
    cat_name = ({"a-cat.mp4", "c-cat-again.mp4"} & set(reports)).pop()
    assert sorted(reports) == sorted([cat_name, "b-stars.mp4"])
    assert sorted(summary["done"]) == sorted(r["video"]["id"] for r in reports.values())
    assert summary["skipped"] == [reports[cat_name]["video"]["id"]]
    assert {e["text"] for e in reports[cat_name]["ocr"]} == {
        c["text"] for c in truth["captions"]}
    assert "rain" in reports["b-stars.mp4"]["transcript"]["text"]
    [failed] = summary["failed"]
    assert failed["path"] == "s3://library/gone.mp4"
    assert failed["error"].startswith("s3://library/gone.mp4: cannot read it: ")
    # each video's bytes crossed the network once: hashed and analyzed from one copy
    assert [s3.downloads(uri) for uri in uris] == [1, 1, 1]


def test_the_service_workers_run_on_the_cluster(
        cluster: str, new_pg: Callable[[], str], cache_dir: Path, tmp_path: Path,
        truth: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    server = Server(new_pg(), tmp_path / "service", cache_dir,
                    {"ray": cluster, "ray_cpus_per_actor": 1, "workers": 1})
    server.start(timeout=240)
    try:
        key = server.create_key("app")
        with server.client(key) as api:
            response = upload(api, SAMPLE, "my clip.mp4")
            assert response.status_code == 202, response.text
            body = server.wait_finished(api, response.json()["id"], timeout=300)
        assert body["status"] == "done", body["reason"]
        assert {c["text"] for c in truth["captions"]} <= {e["text"] for e in
                                                          body["report"]["ocr"]}
        # analyzed by an actor's worker: the server runs none of its own
        assert re.search(r"\d analysis worker actor\(s\) on the Ray cluster", server.tail(400))
        # ... and reports the actors' health and metrics as its own, each named
        monitor = httpx.get(server.url + "/v1/monitor").json()
        metrics = httpx.get(server.url + "/metrics").text
        status = server.cli("monitor", "status", "--url", server.url)
    finally:
        server.stop()
    assert monitor["workers"] == 2  # an actor of one CPU on each node, one worker each
    tasks = {(t["worker"], t["task"]): t for t in monitor["tasks"]}
    assert {task for _, task in tasks} == {"classify", "ocr_det", "ocr_rec"}
    assert len({worker for worker, _ in tasks}) == 2
    assert all(t["state"] == "healthy" for t in tasks.values()), tasks
    # the upload's worker made the calls
    [worker] = {worker for (worker, _), t in tasks.items() if t["requests"]}
    assert status.returncode == 0, status.stderr
    assert f"{worker} classify: healthy (serving: engine)" in status.stdout
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    stages = [s for s in families["reelscope_stage_duration_seconds"].samples
              if s.name.endswith("_count") and s.labels["stage"] == "ocr"]
    assert [(s.labels["worker"], s.value) for s in stages] == [(worker, 1.0)]
    jobs = {s.labels["status"]: s.value for s in families["reelscope_jobs"].samples}
    assert jobs["done"] == 1  # the database's counts, once (the server's)
    assert len(families["reelscope_jobs"].samples) == len(jobs)


def test_a_lost_node_s_videos_are_analyzed_on_the_other(
        ray_cluster: Cluster, new_pg: Callable[[], str], cache_dir: Path, tmp_path: Path,
        different_clip: Path, reencoded_copy: Path) -> None:
    """The last test of the module: the second node is gone after it."""
    db = new_pg()
    library = tmp_path / "library"
    library.mkdir()
    for src, name in ((SAMPLE, "a.mp4"), (different_clip, "b.mp4"), (reencoded_copy, "c.mp4")):
        shutil.copy(src, library / name)
    run = subprocess.Popen(
        [sys.executable, "-m", "reelscope", "batch", str(library), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_batch_env(ray_cluster.address, db, cache_dir))
    # the second node crashes (its raylet and workers, all at once) once analyses began
    assert _once_analyzing(run, lambda pid: os.killpg(ray_cluster.nodes[1].pid, signal.SIGKILL))
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["failed"] == []
    stored = _stored(db)
    assert len(stored) == 3 and sorted(summary["done"] + summary["skipped"]) == sorted(
        i for i, _, _ in stored)
