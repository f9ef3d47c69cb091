"""The dynamic batcher, with model stand-ins on the CPU (the batcher itself is the real one)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from reelscope.errors import ConfigError, DeviceError, DeviceMemoryError, EngineError
from reelscope.pipeline.batcher import BatcherOptions, DynamicBatcher


class StandIn:
    """Doubles its input; records batch sizes; can fail on a value or above a batch size."""

    def __init__(self, oom_above: int | None = None, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.oom_above = oom_above
        self.delay_s = delay_s

    def __call__(self, x: np.ndarray) -> np.ndarray:
        too_big = self.oom_above is not None and len(x) > self.oom_above
        if too_big or np.any(x >= HUGE):
            raise DeviceMemoryError(f"stand-in: the device ran out of memory ({len(x)} frames)")
        if np.any(x < 0):
            raise ValueError("negative pixels: a poisoned input")
        time.sleep(self.delay_s)
        self.sizes.append(len(x))
        return x * 2


HUGE = 1e6  # a stand-in frame so large that it does not fit in memory even alone


def frames(video: int, n: int) -> np.ndarray:
    """n distinct 'frames' of one video (3 values each)."""
    return np.array([[video, i, video * 1000 + i] for i in range(n)], dtype=np.float32)


def test_outputs_return_to_their_videos_in_order() -> None:
    model = StandIn(delay_s=0.001)
    with DynamicBatcher(model, BatcherOptions(max_batch=16, max_wait_s=0.002)) as batcher:
        videos = {v: frames(v, 1 + (v * 7) % 40) for v in range(60)}
        with ThreadPoolExecutor(12) as pool:
            results = dict(zip(videos, pool.map(batcher.run, videos.values()), strict=True))
    for v, x in videos.items():
        np.testing.assert_array_equal(results[v], x * 2)
    assert max(model.sizes) == 16 and sum(model.sizes) == sum(len(x) for x in videos.values())
    full = sum(size == 16 for size in model.sizes)
    assert full >= 0.8 * len(model.sizes)  # frames of different videos share batches


def test_batches_never_exceed_max_batch_and_fill_up() -> None:
    model = StandIn()
    with DynamicBatcher(model, BatcherOptions(max_batch=8, max_wait_s=0.5)) as batcher:
        futures = [batcher.submit(frames(v, 5)) for v in range(10)]  # 50 frames at once
        for v, f in enumerate(futures):
            np.testing.assert_array_equal(f.result(), frames(v, 5) * 2)
    assert model.sizes == [8, 8, 8, 8, 8, 8, 2]


def test_first_frame_waits_at_most_max_wait_for_company() -> None:
    model = StandIn()
    with DynamicBatcher(model, BatcherOptions(max_batch=32, max_wait_s=0.5)) as batcher:
        first = batcher.submit(frames(1, 3))
        time.sleep(0.05)
        second = batcher.submit(frames(2, 3))
        first.result(), second.result()
    assert model.sizes == [6]  # the second video joined the first one's batch

    model = StandIn()
    with DynamicBatcher(model, BatcherOptions(max_batch=32, max_wait_s=0.0)) as batcher:
        first = batcher.submit(frames(1, 3))
        first.result()
        start = time.monotonic()
        batcher.run(frames(2, 3))
    assert model.sizes == [3, 3]  # no waiting: each video ran on its own
    assert time.monotonic() - start < 0.4


def test_the_batchers_stats_count_its_batches_and_the_time_in_its_model() -> None:
    """What a benchmark reads to see how busy a model is: batches, frames, sizes, and the
    time in the model's calls (here 4 calls of 50 ms each; none while the batcher idles)."""
    with DynamicBatcher(StandIn(delay_s=0.05), BatcherOptions(max_batch=4, max_wait_s=0.0)
                        ) as batcher:
        batcher.run(frames(1, 16))
        time.sleep(0.3)
        stats = batcher.stats
    assert (stats.batches, stats.items, stats.sizes) == (4, 16, [4, 4, 4, 4])
    assert 0.2 <= stats.busy_s < 0.3


def test_a_model_error_reaches_every_video_in_the_batch() -> None:
    model = StandIn()
    with DynamicBatcher(model, BatcherOptions(max_batch=32, max_wait_s=0.3)) as batcher:
        good = batcher.submit(frames(1, 4))
        poisoned = batcher.submit(-frames(2, 4) - 1)
        for f in (good, poisoned):
            with pytest.raises(ValueError, match="negative pixels: a poisoned input"):
                f.result(timeout=5)
        later = batcher.run(frames(3, 4))  # the batcher lives on
    np.testing.assert_array_equal(later, frames(3, 4) * 2)


def test_out_of_memory_splits_the_batch_and_lowers_the_limit() -> None:
    model = StandIn(oom_above=8)
    with DynamicBatcher(model, BatcherOptions(max_batch=32, max_wait_s=0.3)) as batcher:
        futures = [batcher.submit(frames(v, 10)) for v in range(4)]
        for v, f in enumerate(futures):
            np.testing.assert_array_equal(f.result(timeout=5), frames(v, 10) * 2)
        assert batcher.batch_limit == 8
        assert batcher.stats.oom_splits == 2  # 32 -> 16 -> 8
        assert max(model.sizes) <= 8 and sum(model.sizes) == 40
        model.sizes.clear()
        batcher.run(frames(9, 20))
    assert model.sizes == [8, 8, 4]  # later batches respect the budget found


def test_a_frame_that_never_fits_fails_only_its_video() -> None:
    model = StandIn()
    with DynamicBatcher(model, BatcherOptions(max_batch=8, max_wait_s=0.3)) as batcher:
        fine = batcher.submit(frames(1, 3))
        huge = batcher.submit(frames(2, 1) + HUGE)
        with pytest.raises(DeviceMemoryError, match="ran out of memory"):
            huge.result(timeout=5)
        np.testing.assert_array_equal(fine.result(timeout=5), frames(1, 3) * 2)


def test_a_slow_model_does_not_block_another_models_queue() -> None:
    slow, fast = StandIn(delay_s=1.0), StandIn()
    with (
        DynamicBatcher(slow, BatcherOptions(max_wait_s=0.0), name="slow") as slow_b,
        DynamicBatcher(fast, BatcherOptions(max_wait_s=0.0), name="fast") as fast_b,
    ):
        pending = slow_b.submit(frames(1, 4))
        fast_b.run(frames(2, 4))
        assert not pending.done()  # the fast model answered while the slow one still works
        pending.result()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_batch must be at least 1"):
        BatcherOptions(max_batch=0)
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        BatcherOptions(workers=0)


def test_closed_batcher_refuses_work_and_leaves_no_thread() -> None:
    batcher = DynamicBatcher(StandIn(), name="closing")
    assert "batcher-closing" in {t.name for t in threading.enumerate()}
    batcher.close()
    with pytest.raises(EngineError, match="batcher 'closing' is closed"):
        batcher.submit(frames(1, 1))
    assert "batcher-closing" not in {t.name for t in threading.enumerate()}


def test_items_of_different_shapes_wait_for_their_own_batch() -> None:
    """Frames of two resolutions in flight at once: each batch holds one shape only, and
    each video still gets its own rows back in order."""
    calls: list[tuple[int, ...]] = []

    def model(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return x.reshape(len(x), -1).sum(axis=1)

    small = np.arange(4 * 6, dtype=np.float32).reshape(4, 2, 3)
    large = np.arange(3 * 12, dtype=np.float32).reshape(3, 3, 4)
    with DynamicBatcher(model, BatcherOptions(max_batch=16, max_wait_s=0.05)) as b:
        a, c = b.submit(small), b.submit(large)
        got_small, got_large = a.result(timeout=5), c.result(timeout=5)
    np.testing.assert_array_equal(got_small, small.reshape(4, -1).sum(axis=1))
    np.testing.assert_array_equal(got_large, large.reshape(3, -1).sum(axis=1))
    assert sorted(calls) == [(3, 3, 4), (4, 2, 3)]


@pytest.mark.parametrize(("raised", "becomes", "says"), [
    (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     DeviceMemoryError, "the device ran out of memory (CUDA out of memory."),
    (lambda: RuntimeError("CUDA error: unspecified launch failure\nCUDA kernel errors..."),
     DeviceError, "the device failed (CUDA error: unspecified launch failure)"),
    (lambda: RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate "
                          "memory for requested buffer of size 123"),
     DeviceMemoryError, "ran out of memory"),
    (lambda: ValueError("bad reshape"), EngineError, "failed: ValueError: bad reshape"),
], ids=["torch oom", "cuda launch failure", "onnxruntime oom", "other"])
def test_device_errors_become_reelscope_errors_where_the_model_runs(
        raised: Any, becomes: type[EngineError], says: str) -> None:
    """A runner's library error is translated once, at ``Runner.infer``; an out-of-memory
    one then makes the batcher split the batch (it looks only at the type)."""
    from reelscope.engine.base import Runner, TensorSpec

    class Failing(Runner):
        NAME = "failing"
        precision = "fp32"
        input_specs = (TensorSpec("x", "float32", (None, 3)),)

        def activate(self) -> None: ...

        def deactivate(self) -> None: ...

        def _infer(self, feed: Any) -> dict[str, np.ndarray]:
            raise raised()

    with Failing() as runner, pytest.raises(becomes) as caught:
        runner.infer({"x": np.zeros((2, 3), np.float32)})
    assert type(caught.value) is becomes and says in str(caught.value)
    assert str(caught.value).startswith("the failing runner")


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_run_model_calls_side_by_side(workers: int) -> None:
    # with two workers, two calls are in the model at once (each waits for the other at
    # the barrier); with one, the second waits for the first and the barrier breaks
    meeting = threading.Barrier(2, timeout=3)
    met: list[bool] = []

    def model(x: np.ndarray) -> np.ndarray:
        try:
            meeting.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return x * 2

    options = BatcherOptions(max_batch=1, max_wait_s=0, workers=workers)
    with DynamicBatcher(model, options, name="side-by-side") as batcher:
        videos = [frames(v, 3) for v in range(4)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(batcher.run, videos))
        names = sorted(t.name for t in threading.enumerate()
                       if t.name.startswith("batcher-side-by-side"))
    for got, x in zip(results, videos, strict=True):
        np.testing.assert_array_equal(got, x * 2)  # rows still return to their videos
    assert names == ["batcher-side-by-side", "batcher-side-by-side-1"][:workers]
    assert met[:2] == [workers == 2] * 2
    assert not [t for t in threading.enumerate() if t.name.startswith("batcher-side-by-side")]
