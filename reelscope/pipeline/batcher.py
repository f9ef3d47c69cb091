"""A dynamic batcher: one model's requests from many concurrent videos merged into batches.

Each request is one video's items (frames, text lines...). Items wait in one FIFO
queue; a worker thread takes up to ``max_batch`` of them of the same shape,
waiting at most ``max_wait_s`` after the first for the batch to fill, runs the model once, and
routes each output row back to its request, in order. A request may span
batches. An exception from the model reaches every request with items in that
batch. An out-of-memory error splits the batch in halves and retries them, and
lowers the batch size used from then on (the memory budget it found).

Each batcher has its own thread (and, on a GPU, may run under its own CUDA
stream through ``context``), so a slow model never holds up another's queue; with
``workers`` above 1 it has that many, taking batches and running the model side by side.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from reelscope.errors import ConfigError, DeviceMemoryError, EngineError

if TYPE_CHECKING:
    from reelscope.config import Settings

log = logging.getLogger("reelscope.batcher")

# a batch to its rows; or to its rows and a note on how they were made (say which path
# of a guarded engine served it), which every request in the batch collects
ModelFn = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, str]"]
Context = Callable[[], AbstractContextManager[object]]  # entered by a batcher's thread


def is_out_of_memory(exc: BaseException) -> bool:
    """The device ran out of memory (the runners translate the libraries' errors)."""
    return isinstance(exc, DeviceMemoryError | MemoryError)


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int = 32  # items per model call
    max_wait_s: float = 0.005  # how long the first item waits for others to join it
    # model calls run at once, each by a thread of its own (ONNX Runtime runs calls of one
    # session side by side, each on its caller's thread and the session's pool)
    workers: int = 1

    @classmethod
    def of(cls, settings: Settings) -> BatcherOptions:
        return cls(settings.max_batch, settings.max_wait_ms / 1000)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.max_wait_s < 0:
            raise ConfigError(f"max_wait_s must not be negative, got {self.max_wait_s}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")


@dataclass
class BatcherStats:
    sizes: list[int] = field(default_factory=list)  # each batch's items, in order
    oom_splits: int = 0
    busy_s: float = 0.0  # time in the model's calls (each batch stacked and run)

    @property
    def batches(self) -> int:
        return len(self.sizes)

    @property
    def items(self) -> int:
        return sum(self.sizes)

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    @classmethod
    def combined(cls, each: Sequence[BatcherStats]) -> BatcherStats:
        """Several batchers' counts as one's (their batches one after another)."""
        return cls([n for s in each for n in s.sizes], sum(s.oom_splits for s in each),
                   sum(s.busy_s for s in each))


class BatchFuture(Future[np.ndarray]):
    """One request's rows; ``notes`` holds the model's notes on the batches that served it."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: set[str] = set()


class _Request:
    def __init__(self, n: int) -> None:
        self.future = BatchFuture()
        self.rows: list[np.ndarray | None] = [None] * n
        self.left = n
        self.failed = False


@dataclass
class _Item:
    request: _Request
    index: int
    data: np.ndarray
    arrived: float


class DynamicBatcher:
    def __init__(
        self,
        model: ModelFn,
        options: BatcherOptions | None = None,
        name: str = "model",
        context: Context | None = None,
        oom: Callable[[BaseException], bool] = is_out_of_memory,
    ) -> None:
        self.model = model
        self.options = options or BatcherOptions()
        self.name = name
        self.context = context or contextlib.nullcontext
        self.oom = oom
        self.stats = BatcherStats()
        self.batch_limit = self.options.max_batch  # lowered when out of memory
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._done = threading.Lock()  # the requests' rows and the stats, as batches finish
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, daemon=True,
                             name=f"batcher-{name}" + (f"-{i}" if i else ""))
            for i in range(self.options.workers)]
        self._thread = self._threads[0]
        for thread in self._threads:
            thread.start()

    # callers ------------------------------------------------------------------------

    def submit(self, items: Sequence[np.ndarray] | np.ndarray) -> BatchFuture:
        """Queue one request's items; the future gives the model's rows for them, in order."""
        request = _Request(len(items))
        if len(items) == 0:
            request.future.set_result(np.zeros((0,), np.float32))
            return request.future
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise EngineError(f"batcher {self.name!r} is closed")
            self._queue.extend(_Item(request, i, np.asarray(x), now) for i, x in enumerate(items))
            self._cond.notify()
        return request.future

    def run(self, items: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Submit and wait."""
        return self.submit(items).result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the worker ---------------------------------------------------------------------

    def _take(self) -> list[_Item] | None:
        """The next batch: the oldest item and up to ``batch_limit - 1`` others of its shape
        (items of other shapes, say frames of another resolution, wait for their own)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            shape = self._queue[0].data.shape
            deadline = self._queue[0].arrived + self.options.max_wait_s
            while self._count(shape) < self.batch_limit and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[_Item] = []
            rest: deque[_Item] = deque()
            for item in self._queue:
                if len(taken) < self.batch_limit and item.data.shape == shape:
                    taken.append(item)
                else:
                    rest.append(item)
            self._queue = rest
            return taken

    def _count(self, shape: tuple[int, ...]) -> int:
        return sum(1 for item in self._queue if item.data.shape == shape)

    def _loop(self) -> None:
        with self.context():
            while (batch := self._take()) is not None:
                live = [item for item in batch if not item.request.failed]
                if live:
                    self._run(live)

    def _run(self, batch: list[_Item]) -> None:
        if len(batch) > self.batch_limit:  # the limit fell (out of memory) since it was taken
            for start in range(0, len(batch), self.batch_limit):
                self._run(batch[start : start + self.batch_limit])
            return
        began = time.perf_counter()
        try:
            result = self.model(np.stack([item.data for item in batch]))
        except Exception as exc:
            if self.oom(exc) and len(batch) > 1:
                half = len(batch) // 2
                with self._done:
                    self.stats.oom_splits += 1
                    self.batch_limit = max(1, min(self.batch_limit, half))
                log.warning("batcher %s: out of memory at batch %d; splitting, batch limit "
                            "now %d", self.name, len(batch), self.batch_limit)
                self._run(batch[:half])
                self._run(batch[half:])
                return
            self._fail(batch, exc)
            return
        rows, note = result if isinstance(result, tuple) else (result, "")
        out = np.asarray(rows)
        if len(out) != len(batch):
            self._fail(batch, EngineError(
                f"model {self.name!r} returned {len(out)} rows for a batch of {len(batch)}"))
            return
        with self._done:
            self.stats.sizes.append(len(batch))
            self.stats.busy_s += time.perf_counter() - began
            for item, row in zip(batch, out, strict=True):
                request = item.request
                if request.failed:
                    continue
                if note:
                    request.future.notes.add(note)
                request.rows[item.index] = row
                request.left -= 1
                if request.left == 0:
                    request.future.set_result(np.stack(request.rows))  # type: ignore[arg-type]

    def _fail(self, batch: list[_Item], exc: BaseException) -> None:
        """``exc`` reaches every request with items in ``batch`` (once each)."""
        with self._done:
            for request in {id(item.request): item.request for item in batch}.values():
                if not request.failed:
                    request.failed = True
                    request.future.set_exception(exc)
