"""A model as the pipeline serves it, the same on every device: its runner (an engine,
guarded by its fp32 reference when the monitor is on) behind a dynamic batcher that
merges the calls of every video in flight.

Tasks never see which backend or device runs their model: they submit items (frames,
text lines, token embeddings) and get rows back, with a note of which path served them
(the engine, or its fallback when the monitor bypassed it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reelscope.engine.base import Runner
from reelscope.monitor.guard import GuardedRunner
from reelscope.pipeline.batcher import BatcherOptions, BatchFuture, Context, DynamicBatcher
from reelscope.report import EngineUse


class ServedModel:
    """``runner`` (active; this object closes it) behind a batcher.

    ``outputs``: the outputs a call returns; with several, each row holds them flattened
    one after another and :meth:`split` gives them back (their shapes per item must not
    depend on the input's, as for a classifier's logits and features)."""

    def __init__(self, name: str, runner: Runner, input_name: str, outputs: Sequence[str],
                 use: EngineUse, options: BatcherOptions, context: Context | None = None
                 ) -> None:
        self.name = name
        self.runner = runner
        self.input_name = input_name
        self.outputs = tuple(outputs)
        self.use = use
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.batcher = DynamicBatcher(self._run, options, name=name, context=context)

    @property
    def guarded(self) -> GuardedRunner | None:
        return self.runner if isinstance(self.runner, GuardedRunner) else None

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, str]:
        guarded = self.guarded
        if guarded is not None:
            guarded.begin()
        out = self.runner.infer({self.input_name: batch})
        path = "+".join(sorted(guarded.paths())) if guarded is not None else "engine"
        if len(self.outputs) == 1:
            return np.asarray(out[self.outputs[0]]), path
        self._shapes = {k: tuple(np.shape(out[k])[1:]) for k in self.outputs}
        return np.concatenate([np.asarray(out[k], np.float32).reshape(len(batch), -1)
                               for k in self.outputs], axis=1), path

    def submit(self, items: Sequence[np.ndarray] | np.ndarray) -> BatchFuture:
        return self.batcher.submit(items)

    def run(self, items: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, set[str]]:
        """Rows for ``items`` (merged with other videos' calls), and which paths served."""
        future = self.submit(items)
        return future.result(), self.paths_of([future])

    @staticmethod
    def paths_of(futures: Sequence[BatchFuture]) -> set[str]:
        """The paths (engine, fallback) that served ``futures``, once all of them are done:
        a batch's note names every path that served it, joined by "+"."""
        return {path for future in futures for note in future.notes
                for path in note.split("+")}

    def split(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """A multi-output model's rows back into its outputs."""
        out, start = {}, 0
        for name in self.outputs:
            shape = self._shapes[name]
            size = int(np.prod(shape))
            out[name] = rows[:, start : start + size].reshape(len(rows), *shape)
            start += size
        return out

    def engine_use(self, paths: set[str] | frozenset[str] = frozenset()) -> EngineUse:
        """What served the model: backend, precision, device, and the paths of ``paths``
        (engine and/or fallback), with whether the engine is bypassed now."""
        guarded = self.guarded
        active = guarded is not None and guarded.health.state == "fallback"
        path = "+".join(sorted(paths)) if paths else "engine"
        return EngineUse(self.use.backend, self.use.precision, self.use.model, path, active,
                         self.use.device)

    def close(self) -> None:
        self.batcher.close()
        self.runner.__exit__(None, None, None)


class RunnerSession:
    """An ONNX Runtime session's face over a served model, for libraries that call
    ``session.run`` themselves (rapidocr): ``run`` goes through the batcher; everything
    else (input names, the metadata holding the recognizer's characters) to ``session``,
    the library's own. The paths that served the calls of one reader are collected in
    ``paths`` (a reader is used by one thread at a time)."""

    def __init__(self, model: ServedModel, session: Any, pad_width_to: int = 0) -> None:
        """``pad_width_to``: the input's last axis is padded with zeros to a multiple of
        this, so that calls of other sizes batch together (0: no padding)."""
        self.model = model
        self.session = session
        self.pad_width_to = pad_width_to
        self.paths: set[str] = set()

    def run(self, output_names: list[str] | None, feed: Mapping[str, np.ndarray],
            *_: object) -> list[np.ndarray]:
        (x,) = feed.values()
        if self.pad_width_to:
            width = x.shape[-1]
            padded = -(-width // self.pad_width_to) * self.pad_width_to
            if padded != width:
                x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, padded - width)])
        rows, paths = self.model.run(x)
        self.paths |= paths
        return [rows]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)
