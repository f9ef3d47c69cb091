"""The store: reports, embeddings and the copyright library in one database.

SQLite (embedded) by default, PostgreSQL or any SQLAlchemy database by URL.
Every write is one transaction: an analysis that fails writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reelscope.errors import NotFoundError, StoreError
from reelscope.report import Report, SimilarVideo
from reelscope.store.schema import Base, ReferenceDescriptorsRow, ReferenceRow, VideoRow
from reelscope.tasks.copydetect import CopyDescriptors
from reelscope.tasks.copyright import LibraryEntry
from reelscope.tasks.fingerprint import Fingerprint

_SCHEMA_LOCK = 0x7265656C  # the advisory lock key of creating the tables ("reel")
VISUAL_WEIGHT = 0.7  # similarity = 0.7 visual + 0.3 text when both videos have text


@dataclass(frozen=True)
class StoredVideo:
    report: Report
    visual: np.ndarray
    text: np.ndarray | None


@dataclass(frozen=True)
class ReferenceInfo:
    id: int
    title: str
    duration_s: float
    created: bool  # False when the same content was already in the library


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True)
        except (ArgumentError, SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot use database {_safe(url)}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        try:
            self._create_tables()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {_safe(url)}: {_cause(exc)}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _create_tables(self) -> None:
        """The tables, where they are missing. On PostgreSQL under an advisory lock:
        processes starting together on a new database (a service's workers on a cluster)
        would otherwise race to create the same table."""
        if self.engine.dialect.name != "postgresql":
            Base.metadata.create_all(self.engine)
            return
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StoreError(f"database error: {_cause(exc)}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # videos -----------------------------------------------------------------

    def find_by_sha256(self, sha256: str) -> Report | None:
        with self.session() as s:
            row = s.scalar(select(VideoRow).where(VideoRow.sha256 == sha256))
            return Report.from_json(row.report_json) if row else None

    def get(self, video_id: str) -> Report:
        with self.session() as s:
            row = s.get(VideoRow, video_id)
            if row is None:
                raise NotFoundError(f"no stored video with id {video_id!r}")
            return Report.from_json(row.report_json)

    def save(self, report: Report, visual: np.ndarray, text: np.ndarray | None) -> None:
        """Insert or replace the video's row in one transaction."""
        with self.session() as s:
            old = s.scalar(select(VideoRow).where(VideoRow.sha256 == report.video.sha256))
            if old is not None:
                s.delete(old)
                s.flush()
            s.add(
                VideoRow(
                    id=report.video.id,
                    sha256=report.video.sha256,
                    filename=report.video.filename[:255],
                    duration_s=report.video.duration_s,
                    report_json=report.to_json(indent=None),
                    visual_embedding=visual.astype("<f4").tobytes(),
                    text_embedding=None if text is None else text.astype("<f4").tobytes(),
                )
            )

    def count_videos(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(VideoRow)) or 0)

    def similar(
        self,
        visual: np.ndarray,
        text: np.ndarray | None,
        k: int,
        exclude: str | None = None,
        among: set[str] | None = None,
    ) -> tuple[SimilarVideo, ...]:
        """The ``k`` stored videos nearest to the given embeddings, best first.

        ``among``: only these video ids (e.g. those one API key may see).
        """
        with self.session() as s:
            rows = s.execute(
                select(VideoRow.id, VideoRow.visual_embedding, VideoRow.text_embedding)
            ).all()
        scored = []
        for vid, vis_blob, text_blob in rows:
            if vid == exclude or (among is not None and vid not in among):
                continue
            score = float(np.dot(visual, np.frombuffer(vis_blob, "<f4")))
            if text is not None and text_blob is not None:
                text_score = float(np.dot(text, np.frombuffer(text_blob, "<f4")))
                score = VISUAL_WEIGHT * score + (1 - VISUAL_WEIGHT) * text_score
            scored.append(SimilarVideo(video_id=vid, score=score))
        scored.sort(key=lambda sv: -sv.score)
        return tuple(scored[:k])

    def embeddings(self, video_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        with self.session() as s:
            row = s.get(VideoRow, video_id)
            if row is None:
                raise NotFoundError(f"no stored video with id {video_id!r}")
            text = None if row.text_embedding is None else np.frombuffer(row.text_embedding, "<f4")
            return np.frombuffer(row.visual_embedding, "<f4"), text

    # copyright library --------------------------------------------------------

    def add_reference(
        self, sha256: str, title: str, duration_s: float, fp: Fingerprint,
        descriptors: CopyDescriptors,
    ) -> ReferenceInfo:
        with self.session() as s:
            old = s.scalar(select(ReferenceRow).where(ReferenceRow.sha256 == sha256))
            if old is not None:
                return ReferenceInfo(old.id, old.title, old.duration_s, created=False)
            row = ReferenceRow(sha256=sha256, title=title, duration_s=duration_s, **fp.to_blobs())
            s.add(row)
            s.flush()
            s.add(ReferenceDescriptorsRow(reference_id=row.id,
                                          descriptors=descriptors.to_blob()))
            return ReferenceInfo(row.id, row.title, row.duration_s, created=True)

    def has_references(self) -> bool:
        with self.session() as s:
            return s.scalar(select(ReferenceRow.id).limit(1)) is not None

    def references(self) -> list[ReferenceInfo]:
        with self.session() as s:
            rows = s.scalars(select(ReferenceRow).order_by(ReferenceRow.id)).all()
            return [ReferenceInfo(r.id, r.title, r.duration_s, created=False) for r in rows]

    def library(self) -> list[LibraryEntry]:
        """Every reference, with its copy descriptors where they were stored in the format
        read now (else None: matched on PDQ hashes)."""
        with self.session() as s:
            rows = s.scalars(select(ReferenceRow)).all()
            described = {ref_id: blob for ref_id, blob in s.execute(
                select(ReferenceDescriptorsRow.reference_id, ReferenceDescriptorsRow.descriptors))}
            return [
                LibraryEntry(
                    r.id,
                    r.title,
                    Fingerprint.from_blobs(
                        r.frame_step_s, r.frame_hashes, r.frame_quality, r.audio_fp, r.audio_item_s
                    ),
                    CopyDescriptors.from_blob(described[r.id]) if r.id in described else None,
                )
                for r in rows
            ]


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    # Transactions are begun by _sqlite_begin_immediate, not by the driver.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    """Take SQLite's write lock when a transaction begins, not when it first writes.

    A deferred transaction that reads and then writes fails at once with
    "database is locked" when another writer got in between (busy_timeout does
    not help there); many workers and uploads at once would hit that.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _cause(exc: SQLAlchemyError) -> str:
    """The driver's own message when there is one: shorter than SQLAlchemy's."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
