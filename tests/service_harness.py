"""The real service on loopback for tests: a server process, keys, a webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(cache_dir: Path, spool: Path, settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSCOPE_")}
    env["REELSCOPE_CACHE_DIR"] = str(cache_dir)
    env["REELSCOPE_SPOOL_DIR"] = str(spool)
    for name, value in settings.items():
        env["REELSCOPE_" + name.upper()] = str(value)
    return env


@dataclass
class Server:
    """``reelscope serve`` in a subprocess, restartable on the same database and spool."""

    db: str
    workdir: Path
    cache_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spool(self) -> Path:
        return self.workdir / "spool"

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reelscope", "--db", self.db, *args],
            capture_output=True, text=True, timeout=120,
            env=_env(self.cache_dir, self.spool, self.settings),
        )

    def create_key(self, name: str, webhook: str = "") -> str:
        result = self.cli("keys", "create", name, "--webhook", webhook)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self, timeout: float = 90.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"\n==== start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reelscope", "--db", self.db, "serve",
                 "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_env(self.cache_dir, self.spool, self.settings),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer /healthz in {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        """A graceful stop (SIGTERM), as a deploy or restart does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, nothing gets to clean up."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def worker(self) -> subprocess.Popen[bytes]:
        """A separate ``reelscope worker`` process on the same database and spool."""
        log = (self.workdir / "worker.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "reelscope", "--db", self.db, "worker"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_env(self.cache_dir, self.spool, {**self.settings, "workers": 1}),
        )

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def wait_finished(self, client: httpx.Client, video_id: str, timeout: float = 180) -> Any:
        return self.wait_status(client, video_id, ("done", "failed"), timeout)

    def wait_status(self, client: httpx.Client, video_id: str, statuses: tuple[str, ...],
                    timeout: float = 180, poll_s: float = 0.2) -> Any:
        """Poll the video until its status is one of ``statuses``; its body then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = client.get(f"/v1/videos/{video_id}").json()
            if body["status"] in statuses:
                return body
            time.sleep(poll_s)
        worker_log = self.workdir / "worker.log"
        logs = self.tail() + ("\n" + worker_log.read_text() if worker_log.exists() else "")
        raise AssertionError(f"video {video_id} not {'/'.join(statuses)} in {timeout} s:\n{logs}")


def upload(client: httpx.Client, path: Path, name: str | None = None) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/videos", files={"file": (name or path.name, fh, "video/mp4")})


def tiny_clip(path: Path, seed: int, seconds: float = 1.0, size: int = 96, fps: int = 10) -> Path:
    """A one-second clip of moving noise, different for every seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


class Receiver:
    """A webhook receiver on loopback: records each event; can be told to fail."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.events: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.fail_with: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.fail_with is not None:
                    self.send_response(receiver.fail_with)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.events.append(json.loads(body))
                    receiver.ids.append(self.headers.get("X-Reelscope-Event-Id", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def video_ids(self) -> list[str]:
        with self._lock:
            return [e["video_id"] for e in self.events]
