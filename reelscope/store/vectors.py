"""Nearest-neighbour indexes over the store's vectors: the key frames of the copyright
references (which references a clip may copy) and the videos' embeddings (``similar``).

The database stays the truth; an index is a file beside it (usearch's HNSW graph, cosine,
int8) that a process loads once and keeps in step through the ``index_log`` table. Every
write of a reference or a video adds a row there in the same transaction, and an index
applies the rows it has not seen before it answers, so processes sharing one database (a
service's workers, batch actors) see each other's writes. Row ids can commit out of order
on PostgreSQL, so the last ``LOOKBACK`` rows are read again each time and those already
applied skipped. A file of another format or signature (the descriptors' format and
projection, the database's instance), or one ahead of its database, is rebuilt from the
rows. A file that cannot be written is a warning: the index then lives in memory only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
LOOKBACK = 1000
SAVE_EVERY_S = 30.0

Rows = Iterable[tuple[int, np.ndarray]]  # (key, vectors (m, ndim)) per indexed item
Hits = list[list[tuple[int, float]]]  # per searched vector: (key, similarity), best first


class VectorIndex(Protocol):
    """What an index backend does: cosine similarity over keyed vectors, several vectors
    per key."""

    def __len__(self) -> int: ...
    def add(self, keys: Sequence[int], vectors: np.ndarray) -> None:
        """Keys are unsigned 64-bit; one row of ``vectors`` per key given."""
        ...

    def remove(self, keys: Sequence[int]) -> None: ...

    def search(self, vectors: np.ndarray, k: int) -> Hits:
        """Up to ``k`` nearest vectors of each."""
        ...

    def save(self, path: Path) -> None: ...


class HnswIndex:
    """usearch's HNSW graph, cosine, vectors kept as int8. ``breadth``: the candidates a
    search keeps in view (HNSW's ef): more finds the true nearest more often, slower."""

    def __init__(self, ndim: int, path: Path | None = None, breadth: int = 64) -> None:
        from usearch.index import Index

        self.ndim = ndim
        restored = Index.restore(str(path)) if path is not None else None
        if path is not None and (restored is None or restored.ndim != ndim):
            raise ValueError(f"{path} is not a {ndim}-d index")
        self._index: Index = restored if restored is not None else Index(
            ndim=ndim, metric="cos", dtype="i8", multi=True)
        self._index.expansion_search = breadth  # type: ignore[misc]  # it has a setter

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: Sequence[int], vectors: np.ndarray) -> None:
        if len(keys):
            self._index.add(np.asarray(keys, np.uint64), vectors.astype(np.float32))

    def remove(self, keys: Sequence[int]) -> None:
        for key in keys:
            if self._index.contains(key):
                self._index.remove(key)

    def search(self, vectors: np.ndarray, k: int) -> Hits:
        n = len(vectors)
        if n == 0 or len(self._index) == 0:
            return [[] for _ in range(n)]
        found: Any = self._index.search(vectors.astype(np.float32), k)
        keys = np.asarray(found.keys, np.uint64).reshape(n, -1).tolist()
        distances = np.asarray(found.distances).reshape(n, -1).tolist()
        # one vector: Matches, only what was found; several: slots past counts are unset
        counts = [len(keys[0])] if n == 1 else np.asarray(found.counts).tolist()
        return [[(key, 1.0 - d) for key, d in zip(keys[i][:c], distances[i][:c], strict=True)]
                for i, c in enumerate(counts)]

    def save(self, path: Path) -> None:
        self._index.save(str(path))


class SyncedIndex:
    """One index kept in step with the database.

    ``load(keys)``: the vectors of those keys as stored now (all rows for None; a key
    whose row is gone yields nothing); ``log(after)``: the (id, key) rows of ``index_log``
    for this index with id > ``after``; ``last_id()``: the highest id there, 0 for none.
    ``path``: the file (None: kept in memory only); ``breadth``: as for HnswIndex."""

    def __init__(self, name: str, ndim: int, signature: str, path: Path | None,
                 load: Callable[[Sequence[int] | None], Rows],
                 log: Callable[[int], list[tuple[int, int]]],
                 last_id: Callable[[], int], breadth: int = 64) -> None:
        self.name = name
        self.ndim = ndim
        self.breadth = breadth
        self.signature = signature
        self.path = path
        self._load, self._log, self._last_id = load, log, last_id
        self._lock = threading.Lock()
        self._index: VectorIndex | None = None
        self._cursor = 0
        self._applied: set[int] = set()
        self._dirty = False
        self._saved_at = 0.0

    # answers -------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int) -> Hits:
        with self._lock:
            index = self._synced()
            return index.search(vectors, k)

    def close(self) -> None:
        with self._lock:
            if self._index is not None and self._dirty:
                self._save()

    # keeping in step -----------------------------------------------------------------

    def _synced(self) -> VectorIndex:
        if self._index is None:
            self._index = self._open()
        self._apply(self._index)
        return self._index

    def _meta_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(self.path.name + ".json")

    def _open(self) -> VectorIndex:
        meta_path = self._meta_path()
        if self.path is not None and meta_path is not None and self.path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                # the file the meta describes (another process may have saved between
                # the two renames), of this kind, and not ahead of its database
                if (meta.get("format"), meta.get("signature"), meta.get("ndim"),
                        meta.get("file")) == (FORMAT, self.signature, self.ndim,
                                              _identity(self.path)) \
                        and meta["cursor"] <= self._last_id():
                    index = HnswIndex(self.ndim, self.path, self.breadth)
                    self._cursor = int(meta["cursor"])
                    self._applied = {int(i) for i in meta["applied"]}
                    return index
            except (OSError, ValueError, KeyError, TypeError, RuntimeError):
                pass  # unreadable or of another kind: built again below
        return self._build()

    def _build(self) -> VectorIndex:
        self._cursor = self._last_id()  # rows logged while building are applied after
        self._applied = set()
        index = HnswIndex(self.ndim, breadth=self.breadth)
        keys: list[int] = []
        vectors: list[np.ndarray] = []
        for key, vecs in self._load(None):
            keys += [key] * len(vecs)
            vectors.append(vecs)
            if len(keys) >= 8192:
                index.add(keys, np.concatenate(vectors))
                keys, vectors = [], []
        if keys:
            index.add(keys, np.concatenate(vectors))
        self._dirty = True
        self._save(index)
        return index

    def _apply(self, index: VectorIndex) -> None:
        rows = [(i, key) for i, key in self._log(max(0, self._cursor - LOOKBACK))
                if i not in self._applied]
        if not rows:
            return
        keys = sorted({key for _, key in rows})
        index.remove(keys)
        for key, vecs in self._load(keys):
            index.add([key] * len(vecs), vecs)
        self._applied.update(i for i, _ in rows)
        self._cursor = max(self._cursor, max(i for i, _ in rows))
        self._applied = {i for i in self._applied if i > self._cursor - LOOKBACK}
        self._dirty = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self._save(index)

    def _save(self, index: VectorIndex | None = None) -> None:
        index = index if index is not None else self._index
        meta_path = self._meta_path()
        if self.path is None or meta_path is None or index is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            index.save(tmp)
            meta = {"format": FORMAT, "signature": self.signature, "ndim": self.ndim,
                    "cursor": self._cursor, "applied": sorted(self._applied),
                    "file": _identity(tmp)}
            os.replace(tmp, self.path)
            tmp_meta = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_meta, meta_path)
        except OSError as exc:  # kept in memory: built again by the next process
            log.warning("cannot write the %s index %s: %s", self.name, self.path, exc)
            self._saved_at = time.monotonic()
            return
        self._dirty = False
        self._saved_at = time.monotonic()


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns]
