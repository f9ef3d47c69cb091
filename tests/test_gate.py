"""The GPU gate: model calls and decoding share the GPU, a CUDA graph capture has it to
itself (reelscope.gpu.gate). Threads stand in for the batchers and decoders. And the
batch sizes CUDA graphs are captured for (reelscope.gpu.graphs)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from reelscope.gpu.gate import GpuGate


def test_work_runs_side_by_side_and_a_capture_waits_for_it_to_end() -> None:
    gate = GpuGate()
    inside, leave = threading.Barrier(3), threading.Event()
    log: list[str] = []

    def work(name: str) -> None:
        with gate.shared():
            inside.wait(timeout=5)  # both calls are inside at once
            leave.wait(timeout=5)
            log.append(f"{name} done")

    def capture() -> None:
        with gate.exclusive():
            log.append("captured")

    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(work, n) for n in ("classifier", "decoder")]
        inside.wait(timeout=5)
        captured = pool.submit(capture)
        time.sleep(0.2)
        assert not captured.done()  # the calls are still on the GPU
        leave.set()
        captured.result(timeout=5)
        for c in calls:
            c.result(timeout=5)
    assert log[-1] == "captured" and sorted(log[:2]) == ["classifier done", "decoder done"]


def test_new_work_waits_while_a_capture_is_waiting_or_running() -> None:
    gate = GpuGate()
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def long_call() -> None:
        with gate.shared():
            holding.set()
            release.wait(timeout=5)
            order.append("long call")

    def capture() -> None:
        with gate.exclusive():
            order.append("capture")

    def new_call() -> None:
        with gate.shared():
            order.append("new call")

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(long_call)
        holding.wait(timeout=5)
        captured = pool.submit(capture)
        time.sleep(0.1)  # the capture now waits for the long call
        late = pool.submit(new_call)
        time.sleep(0.1)
        assert order == []  # the new call waits behind the capture, not beside it
        release.set()
        for f in (first, captured, late):
            f.result(timeout=5)
    assert order == ["long call", "capture", "new call"]


def test_calls_that_capture_from_inside_their_work_do_not_wait_for_each_other() -> None:
    """Two batchers meet a new shape at once, each inside its own call: each captures in
    turn (their shared holds set aside while they wait), and holds nest in a thread."""
    gate = GpuGate()
    both_inside = threading.Barrier(2)
    captures: list[int] = []
    alone = threading.Lock()

    def call(k: int) -> None:
        with gate.shared(), gate.shared():  # a guarded runner calling its engine
            both_inside.wait(timeout=5)
            with gate.exclusive():
                assert alone.acquire(blocking=False)  # no other capture meanwhile
                with gate.shared():  # the capture's own warm-up calls
                    time.sleep(0.05)
                captures.append(k)
                alone.release()

    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(call, k) for k in range(2)]
        for f in done:
            f.result(timeout=10)
    assert sorted(captures) == [0, 1]
    with gate.exclusive():  # and the gate is free again
        pass


def test_batches_are_padded_to_few_sizes() -> None:
    """A batcher's batches of every size from 1 to its cap meet few CUDA graphs: each is
    padded to a power of two, within the largest batch the model takes."""
    from reelscope.gpu.graphs import batch_sizes, padded_batch

    assert [padded_batch(n, 32) for n in (1, 2, 3, 5, 9, 17, 32)] == [1, 2, 4, 8, 16, 32, 32]
    assert [padded_batch(n, 24) for n in (9, 17, 24)] == [16, 24, 24]
    assert {padded_batch(n, 24) for n in range(1, 25)} == set(batch_sizes(24))
    assert batch_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert padded_batch(7, 0) == 7 and batch_sizes(0) == []  # no largest batch known: no padding
