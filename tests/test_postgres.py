"""The same store code on PostgreSQL (the server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import SAMPLE, postgres_databases
from test_bad_input import _truncated

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards."""
    with postgres_databases() as make:
        yield make()


def _rows(url: str) -> tuple[list[Any], list[Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        videos = conn.execute(
            sa.text("SELECT id, sha256, report_json FROM videos ORDER BY id")
        ).all()
        refs = conn.execute(sa.text("SELECT id, title FROM copyright_references ORDER BY id")).all()
    engine.dispose()
    return list(videos), list(refs)


def test_analyze_show_and_match_on_postgres(
    run_cli: Any, pg_url: str, tmp_path: Path, reencoded_copy: Path
) -> None:
    added = run_cli("references", "add", str(SAMPLE), "--title", "Song A", db=pg_url)
    assert added.code == 0, added.stderr
    ref_id = int(added.stdout)

    result = run_cli("analyze", str(reencoded_copy), "--json", db=pg_url)
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["copyright"][0]["reference_id"] == ref_id
    assert "This is my cat" in {e["text"] for e in report["ocr"]}

    shown = run_cli("show", report["video"]["id"], "--json", db=pg_url)
    assert shown.code == 0 and shown.json()["transcript"] == report["transcript"]

    before = _rows(pg_url)
    bad = run_cli("analyze", str(_truncated(tmp_path / "cut.mp4")), db=pg_url)
    assert bad.code == 2 and "truncated or damaged" in bad.stderr
    assert _rows(pg_url) == before


def test_processes_starting_together_on_a_new_database_all_open_it() -> None:
    """A service's workers on a cluster start at once on a new database: each creates the
    tables where they are missing, and none fails on another's half-made table."""
    import threading

    from reelscope.store.store import Store

    with postgres_databases() as make:
        url = make()
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def open_store() -> None:
            start.wait()
            try:
                Store(url).close()
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert Store(url).count_videos() == 0


def test_the_indexes_follow_writes_of_another_store_on_postgres(pg_url: str,
                                                                 tmp_path: Path) -> None:
    """Two stores on one PostgreSQL database, as a service's workers are: what one saves,
    the other's index finds, and each keeps its index files where it was told."""
    import numpy as np
    from test_vector_index import _library, _save, _unit

    from reelscope.store.store import Store

    writer = Store(pg_url, index_dir=tmp_path / "writer")
    reader = Store(pg_url, index_dir=tmp_path / "reader")
    ids, vectors = _library(writer, 60)
    assert reader.similar(vectors[7], None, 1)[0].video_id == ids[7]
    newcomer = _unit(np.random.default_rng(5).normal(size=1280))
    _save(writer, 500, newcomer)
    assert reader.similar(newcomer, None, 1)[0].video_id == f"{500:016x}"
    writer.close()
    reader.close()
    assert (tmp_path / "reader" / "visual.usearch").is_file()
