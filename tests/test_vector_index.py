"""The store's nearest-neighbour indexes: ``similar`` answers from them, they follow
writes made by another process on the same database, and a file of another kind is built
again instead of being read wrongly."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reelscope.report import Report, VideoInfo
from reelscope.store.store import Store

DIM = 1280


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _save(store: Store, n: int, visual: np.ndarray) -> str:
    sha = f"{n:016x}" * 4
    report = Report(VideoInfo(id=sha[:16], sha256=sha, duration_s=1.0, width=8, height=8,
                              fps=25.0, has_audio=False))
    store.save(report, visual, None)
    return sha[:16]


def _library(store: Store, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    vectors = _unit(np.random.default_rng(seed).normal(size=(n, DIM)))
    return [_save(store, i + 1, v) for i, v in enumerate(vectors)], vectors


def test_similar_returns_the_nearest_videos(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'lib.db'}")
    ids, vectors = _library(store, 300)
    rng = np.random.default_rng(1)
    for target in (17, 123, 299):
        query = _unit(vectors[target] + 0.6 * rng.normal(size=DIM) / np.sqrt(DIM))
        exact = np.argsort(-(vectors @ query))[:5]
        found = store.similar(query, None, 5)
        assert [f.video_id for f in found] == [ids[i] for i in exact]
        assert found[0].video_id == ids[target]
        assert found[0].score == pytest.approx(float(vectors[target] @ query), abs=1e-5)
    # excluded and out-of-scope videos are not returned, and k are still found
    found = store.similar(vectors[5], None, 4, exclude=ids[5], among=set(ids[:3000]))
    assert len(found) == 4 and ids[5] not in {f.video_id for f in found}
    store.close()
    assert (tmp_path / "lib.db-index" / "visual.usearch").is_file()


def test_a_video_saved_by_another_process_is_found(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    store = Store(f"sqlite:///{db}")
    ids, vectors = _library(store, 50)
    assert store.similar(vectors[3], None, 1)[0].video_id == ids[3]  # the index is built
    newcomer = _unit(np.random.default_rng(9).normal(size=DIM))
    script = f"""
import numpy as np, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_vector_index import _save
from reelscope.store.store import Store
store = Store("sqlite:///{db}")
_save(store, 1000, np.array({newcomer.tolist()}, np.float32))
store.close()
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert store.similar(newcomer, None, 1)[0].video_id == f"{1000:016x}"
    # a video saved again with new embeddings is found by its new ones
    _save(store, 4, -vectors[3])
    assert store.similar(vectors[3], None, 51)[-1].video_id == ids[3]
    store.close()


def test_an_index_file_of_another_kind_is_built_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    store = Store(url)
    ids, vectors = _library(store, 80)
    store.similar(vectors[0], None, 1)
    store.close()
    meta_path = tmp_path / "lib.db-index" / "visual.usearch.json"
    meta = json.loads(meta_path.read_text())
    meta["signature"] = "visual0-" + meta["signature"].split("-", 1)[1]
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "lib.db-index" / "text.usearch").write_bytes(b"not an index")

    reopened = Store(url)
    assert reopened.similar(vectors[42], None, 1)[0].video_id == ids[42]
    reopened.close()
    assert json.loads(meta_path.read_text())["signature"].startswith("visual1-")


def test_a_database_made_anew_does_not_reuse_the_old_index(tmp_path: Path) -> None:
    db = tmp_path / "lib.db"
    store = Store(f"sqlite:///{db}")
    _, old = _library(store, 40, seed=3)
    store.similar(old[0], None, 1)
    store.close()
    db.unlink()
    fresh = Store(f"sqlite:///{db}")
    ids, _ = _library(fresh, 2, seed=4)
    found = fresh.similar(old[0], None, 5)
    assert sorted(f.video_id for f in found) == sorted(ids)
    fresh.close()


def test_a_store_that_only_reads_writes_nothing_for_the_indexes(tmp_path: Path) -> None:
    """Listing and showing (a read-only database, a replica) neither make index files nor
    write the database's instance id."""
    store = Store(f"sqlite:///{tmp_path / 'lib.db'}")
    assert store.count_videos() == 0 and store.references() == []
    store.close()
    assert not (tmp_path / "lib.db-index").exists()
    with sqlite3.connect(tmp_path / "lib.db") as conn:
        assert conn.execute("SELECT count(*) FROM store_info").fetchone() == (0,)
