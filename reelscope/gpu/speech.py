"""Whisper on the GPU in worker processes of its own.

Greedy decoding launches many small kernels per token from Python. In the analysis
process it shares the interpreter lock with the picture work and waits for it at each
launch (BENCHMARKS.md measures how much). A worker process has its own lock; the audio
goes there and the transcript comes back. A worker takes the audio of every video sent to
it at once (a thread for each) and decodes their 30 s windows in batches
(:class:`~reelscope.tasks.asr.WindowBatches`), so the videos in flight share each decoder
step's launches instead of queueing for the model one after another.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from reelscope.errors import ModelError
from reelscope.models import model
from reelscope.pipeline.batcher import BatcherStats
from reelscope.report import EngineUse, Transcript
from reelscope.tasks.asr import MAX_WINDOWS

START_TIMEOUT_S = 600.0  # loading Whisper (and CUDA) in a new process
STOP_TIMEOUT_S = 10.0
REQUESTS = 4 * MAX_WINDOWS  # transcripts a worker makes at once; more wait their turn


def _serve(conn: Connection, model_dir: str, device: str, precision: str) -> None:
    """A worker process: load the model, then answer each request on a thread of its own
    until the parent says stop (None) or goes."""
    try:
        import torch

        from reelscope.tasks.asr import SpeechRecognizer

        if device.startswith("cuda"):
            from reelscope.gpu.device import quiet_cpu_pools

            torch.cuda.set_device(torch.device(device))
            quiet_cpu_pools()
        recognizer = SpeechRecognizer(Path(model_dir), device, precision, batch_windows=True)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    sending = threading.Lock()

    def answer(key: int, kind: str, audio: np.ndarray | None) -> None:
        try:
            if kind == "stats":
                assert recognizer.windows is not None
                value: Any = recognizer.windows.stats()
            else:
                value = recognizer.transcribe(audio if audio is not None else np.zeros(0))
            reply: tuple[int, bool, Any] = (key, True, value)
        except Exception as exc:  # the caller's to raise
            reply = (key, False, exc)
        with sending:
            try:
                conn.send(reply)
            except Exception as exc:  # an exception that does not pickle
                conn.send((key, False, ModelError(f"speech worker: {reply[2]!r} ({exc})")))

    with ThreadPoolExecutor(REQUESTS, thread_name_prefix="speech") as pool:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the parent went
                break
            if message is None:
                break
            pool.submit(answer, *message)


class _Worker:
    """One worker process, its pipe, and the answers it owes."""

    def __init__(self, index: int, model_dir: Path, device: str, precision: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_serve, name=f"reelscope-speech-{index}",
                                   args=(theirs, str(model_dir), device, precision),
                                   daemon=True)
        self.process.start()
        theirs.close()
        self.pending: dict[int, Future[Any]] = {}
        self.lock = threading.Lock()  # the answers owed
        self.sending = threading.Lock()
        self.keys = itertools.count()
        self.gone = ""
        self.reader = threading.Thread(target=self._read, name="speech-answers", daemon=True)

    def wait_ready(self) -> None:
        if not self.conn.poll(START_TIMEOUT_S):
            raise ModelError(f"did not start within {START_TIMEOUT_S:g} s")
        try:
            kind, detail = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ModelError(f"exited while starting (exit code {self.process.exitcode})"
                             ) from exc
        if kind != "ready":
            raise ModelError(str(detail))
        self.reader.start()

    def call(self, kind: str, audio: np.ndarray | None = None) -> Future[Any]:
        future: Future[Any] = Future()
        with self.lock:
            if self.gone:
                raise ModelError(self.gone)
            key = next(self.keys)
            self.pending[key] = future
        try:
            with self.sending:
                self.conn.send((key, kind, audio))
        except (OSError, ValueError) as exc:  # the process went meanwhile
            with self.lock:
                self.pending.pop(key, None)
            raise ModelError(f"the speech worker process cannot be reached: {exc}") from exc
        return future

    def load(self) -> int:
        with self.lock:
            return len(self.pending)

    def _read(self) -> None:
        while True:
            try:
                key, ok, value = self.conn.recv()
            except (EOFError, OSError):
                break
            with self.lock:
                future = self.pending.pop(key, None)
            if future is not None:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        self.process.join(STOP_TIMEOUT_S)
        with self.lock:  # the process went: what it owed fails, what comes is refused
            self.gone = (f"the speech worker process stopped (exit code "
                         f"{self.process.exitcode})")
            for future in self.pending.values():
                future.set_exception(ModelError(self.gone))
            self.pending.clear()

    def stop(self) -> None:
        try:
            with self.sending:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT_S)
        self.conn.close()


class SpeechProcesses:
    """The interface of :class:`reelscope.tasks.asr.SpeechRecognizer`, served by
    ``processes`` worker processes that each hold the model; a transcript goes to the
    worker with the fewest waiting."""

    def __init__(self, model_dir: Path, device: str, precision: str, processes: int) -> None:
        self.device = device
        self.precision = precision
        self.processes = processes
        self.workers: list[_Worker] = []
        try:
            for i in range(processes):
                self.workers.append(_Worker(i, model_dir, device, precision))
            for worker in self.workers:
                worker.wait_ready()
        except Exception as exc:
            self.close()
            raise ModelError(f"the speech worker processes did not start: {exc}") from exc

    @property
    def engine(self) -> EngineUse:
        return EngineUse("torch-eager", self.precision,
                         f"{model('asr').name} ({self.processes} processes of its own)",
                         device=self.device)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        worker = min(self.workers, key=lambda w: w.load())
        result: Transcript = worker.call("transcribe", audio).result()
        return result

    def stats(self) -> BatcherStats:
        """How the workers batched the windows they decoded (the items), all together."""
        return BatcherStats.combined([w.call("stats").result() for w in self.workers])

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []
