"""The store: reports, embeddings and the copyright library in one database.

SQLite (embedded) by default, PostgreSQL or any SQLAlchemy database by URL.
Every write is one transaction: an analysis that fails writes nothing. Nearest-neighbour
indexes (``reelscope.store.vectors``) find the references a clip may copy and the videos
``similar`` returns without reading every row; their files live beside a SQLite
database, else in ``index_dir``.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from sqlalchemy import create_engine, event, func, insert, or_, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reelscope.errors import NotFoundError, StoreError
from reelscope.report import Report, SimilarVideo
from reelscope.store.schema import (
    AudioHashRow,
    Base,
    IndexLogRow,
    ReferenceDescriptorsRow,
    ReferenceLandmarksRow,
    ReferenceRow,
    StoreInfoRow,
    VideoRow,
)
from reelscope.store.vectors import Rows, SyncedIndex
from reelscope.tasks import copydetect, landmarks
from reelscope.tasks.copydetect import CopyDescriptors
from reelscope.tasks.copyright import LibraryEntry
from reelscope.tasks.fingerprint import Fingerprint
from reelscope.tasks.landmarks import Landmarks

_SCHEMA_LOCK = 0x7265656C  # the advisory lock key of creating the tables ("reel")
VISUAL_WEIGHT = 0.7  # similarity = 0.7 visual + 0.3 text when both videos have text
COPY_CANDIDATES = 32  # references aligned in full per clip, the index's nearest
COPY_NEIGHBOURS = 32  # key frames found per search vector
# HNSW's search breadth (ef): the copy index searches with many vectors per clip, each
# of which may find its reference; similar() with one vector per index, which must
# (benchmarks/similar_index.py: 1280-d at 100k videos, ef 64 finds a vector's true
# nearest 66% of the time, 512 100%)
COPY_BREADTH = 64
SIMILAR_BREADTH = 512
EXACT_AMONG = 2000  # similar() among this few videos reads them all instead
MIN_AUDIO_HITS = 8  # landmarks shared with a clip for a reference to be matched on them


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
    def __init__(self, url: str, index_dir: Path | None = None) -> None:
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
        self._index_dir = index_dir
        self._indexes: dict[str, SyncedIndex] = {}
        self._indexes_lock = threading.Lock()

    def _instance_id(self) -> str:
        with self.session() as s:
            row = s.get(StoreInfoRow, "instance")
            if row is not None:
                return row.value
        try:
            with self.session() as s:
                s.add(StoreInfoRow(name="instance", value=uuid.uuid4().hex))
        except StoreError as exc:  # another process made it first
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        with self.session() as s:
            return s.get(StoreInfoRow, "instance").value  # type: ignore[union-attr]

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
        with self._indexes_lock:
            for index in self._indexes.values():
                index.close()
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
            s.add(IndexLogRow(name="video", key=report.video.id))

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

        ``among``: only these video ids (e.g. those one API key may see). Candidates come
        from the visual and text indexes, more of them until ``k`` pass the filters, and
        are scored exactly; among a few ids, those are read and scored directly."""
        if among is not None and len(among) <= EXACT_AMONG:
            return self._scored(visual, text, sorted(among - {exclude or ""}), k)
        wanted = 4 * k + 16
        while True:
            (nearest,) = self._index("visual").search(visual[None, :], wanted)
            keys = {key for key, _ in nearest}
            if text is not None:
                (worded,) = self._index("text").search(text[None, :], wanted)
                keys |= {key for key, _ in worded}
            ids = [i for i in map(_video_id, keys)
                   if i != exclude and (among is None or i in among)]
            # fewer neighbours than asked for: the visual index holds no more videos
            if len(ids) >= k or len(nearest) < wanted:
                return self._scored(visual, text, ids, k)
            wanted *= 4

    def _scored(self, visual: np.ndarray, text: np.ndarray | None, ids: Sequence[str],
                k: int) -> tuple[SimilarVideo, ...]:
        scored = []
        for vid, vis_blob, text_blob in self._embedding_rows(ids):
            score = float(np.dot(visual, np.frombuffer(vis_blob, "<f4")))
            if text is not None and text_blob is not None:
                text_score = float(np.dot(text, np.frombuffer(text_blob, "<f4")))
                score = VISUAL_WEIGHT * score + (1 - VISUAL_WEIGHT) * text_score
            scored.append(SimilarVideo(video_id=vid, score=score))
        scored.sort(key=lambda sv: -sv.score)
        return tuple(scored[:k])

    def _embedding_rows(self, ids: Sequence[str] | None) -> Iterator[tuple[str, bytes,
                                                                           bytes | None]]:
        """(id, visual, text) of these videos (every video for None), in pages."""
        columns = select(VideoRow.id, VideoRow.visual_embedding, VideoRow.text_embedding)
        if ids is None:
            with self.session() as s:
                yield from s.execute(columns.execution_options(yield_per=1000))
            return
        for start in range(0, len(ids), 500):
            with self.session() as s:
                yield from s.execute(columns.where(VideoRow.id.in_(ids[start:start + 500])))

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
        descriptors: CopyDescriptors, heard: Landmarks,
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
            s.add(IndexLogRow(name="reference", key=str(row.id)))
            s.add(ReferenceLandmarksRow(reference_id=row.id, format=landmarks.FORMAT,
                                        frames=heard.length))
            pairs = np.unique(np.stack([heard.hashes.astype(np.int64),
                                        heard.frames.astype(np.int64)], axis=1), axis=0)
            if len(pairs):
                s.execute(insert(AudioHashRow), [
                    {"hash": h, "reference_id": row.id, "frame": f} for h, f in pairs.tolist()])
            return ReferenceInfo(row.id, row.title, row.duration_s, created=True)

    def has_references(self) -> bool:
        with self.session() as s:
            return s.scalar(select(ReferenceRow.id).limit(1)) is not None

    def references(self) -> list[ReferenceInfo]:
        with self.session() as s:
            rows = s.scalars(select(ReferenceRow).order_by(ReferenceRow.id)).all()
            return [ReferenceInfo(r.id, r.title, r.duration_s, created=False) for r in rows]

    def library(self, query: CopyDescriptors, heard: Landmarks) -> list[LibraryEntry]:
        """The references a clip is matched against, each with what to match it on.

        - Video: the copy index's nearest references to ``query`` (at most
          COPY_CANDIDATES) come with their descriptors; a reference stored before
          descriptors comes with its PDQ hashes; any other has no video to match.
        - Audio: the references sharing at least MIN_AUDIO_HITS landmarks with ``heard``
          come with those hits; a reference stored before landmarks comes with its
          Chromaprint fingerprint; any other has no audio to match."""
        hits = self._index("copy").search(copydetect.query_vectors(query), COPY_NEIGHBOURS)
        video = set(copydetect.rank_candidates(hits, COPY_CANDIDATES))
        audio = self._audio_hits(heard)
        # the legacy ones, chosen in the database: their number is the library's to decide
        no_descriptors = ReferenceRow.id.not_in(select(ReferenceDescriptorsRow.reference_id))
        no_landmarks = ReferenceRow.id.not_in(select(ReferenceLandmarksRow.reference_id).where(
            ReferenceLandmarksRow.format == landmarks.FORMAT))
        with self.session() as s:
            refs = s.execute(select(ReferenceRow.id, ReferenceRow.title,
                                    ReferenceRow.frame_step_s, ReferenceRow.audio_item_s)
                             .where(or_(ReferenceRow.id.in_(video | set(audio)),
                                        no_descriptors, no_landmarks))).all()
            pdq = {i: (h, q) for i, h, q in s.execute(
                select(ReferenceRow.id, ReferenceRow.frame_hashes, ReferenceRow.frame_quality)
                .where(no_descriptors))}
            chroma = {i: fp for i, fp in s.execute(
                select(ReferenceRow.id, ReferenceRow.audio_fp).where(no_landmarks))}
            blobs = {i: blob for i, blob in s.execute(
                select(ReferenceDescriptorsRow.reference_id, ReferenceDescriptorsRow.descriptors)
                .where(ReferenceDescriptorsRow.reference_id.in_(video)))}
            frames = {i: n for i, n in s.execute(
                select(ReferenceLandmarksRow.reference_id, ReferenceLandmarksRow.frames)
                .where(ReferenceLandmarksRow.reference_id.in_(set(audio))))}
        return [LibraryEntry(
            r.id, r.title,
            Fingerprint.from_blobs(r.frame_step_s, *pdq.get(r.id, (b"", b"")),
                                   chroma.get(r.id, b""), r.audio_item_s),
            _descriptors(blobs[r.id]) if r.id in blobs else None,
            tuple(audio[r.id]) if r.id in audio else None,
            frames.get(r.id, 0)) for r in refs]

    def _audio_hits(self, heard: Landmarks) -> dict[int, list[tuple[int, int]]]:
        """Per reference, the (hash, frame) of its landmarks whose hash ``heard`` has,
        for the references with at least MIN_AUDIO_HITS of them."""
        hashes = np.unique(heard.hashes).tolist()
        found: dict[int, list[tuple[int, int]]] = {}
        with self.session() as s:
            for start in range(0, len(hashes), 500):
                for h, ref_id, frame in s.execute(
                        select(AudioHashRow.hash, AudioHashRow.reference_id, AudioHashRow.frame)
                        .where(AudioHashRow.hash.in_(hashes[start:start + 500]))):
                    found.setdefault(ref_id, []).append((h, frame))
        return {ref_id: hits for ref_id, hits in found.items() if len(hits) >= MIN_AUDIO_HITS}

    # indexes ------------------------------------------------------------------

    def _index(self, name: str) -> SyncedIndex:
        """The named index, made on first use: a store that only reads reports never
        touches the index files or writes the database's instance id."""
        with self._indexes_lock:
            if name not in self._indexes:
                instance = self._instance_id()
                folder = self._index_dir or _default_index_dir(self.url, instance)
                if name == "copy":
                    made = self._synced("copy", copydetect.SEARCH_DIM,
                                        copydetect.search_signature(), instance, folder,
                                        "reference", self._reference_keys, COPY_BREADTH)
                else:
                    made = self._synced(name, 1280 if name == "visual" else 512, f"{name}1",
                                        instance, folder, "video", self._video_vectors(name),
                                        SIMILAR_BREADTH)
                self._indexes[name] = made
            return self._indexes[name]

    def _synced(self, name: str, ndim: int, signature: str, instance: str,
                folder: Path | None, logged_as: str, load: Any, breadth: int
                ) -> SyncedIndex:
        def log(after: int) -> list[tuple[int, int]]:
            with self.session() as s:
                return [(i, _index_key(logged_as, key)) for i, key in s.execute(
                    select(IndexLogRow.id, IndexLogRow.key).where(
                        IndexLogRow.name == logged_as, IndexLogRow.id > after)
                    .order_by(IndexLogRow.id))]

        def last_id() -> int:
            with self.session() as s:
                return int(s.scalar(select(func.max(IndexLogRow.id))) or 0)

        return SyncedIndex(name, ndim, f"{signature}-{instance}",
                           None if folder is None else folder / f"{name}.usearch",
                           load, log, last_id, breadth)

    def _reference_keys(self, ids: Sequence[int] | None) -> Rows:
        """Each described reference's key frames in the copy search space. Descriptors
        of another format or damaged are left out: such a reference cannot be matched
        on them."""
        query = select(ReferenceDescriptorsRow.reference_id, ReferenceDescriptorsRow.descriptors)
        if ids is not None:
            query = query.where(ReferenceDescriptorsRow.reference_id.in_(list(ids)))
        with self.session() as s:
            for ref_id, blob in s.execute(query.execution_options(yield_per=200)):
                try:
                    found = CopyDescriptors.from_blob(blob)
                except ValueError:
                    continue
                if found is not None:
                    yield ref_id, copydetect.key_vectors(found)

    def _video_vectors(self, which: str) -> Any:
        def load(keys: Sequence[int] | None) -> Rows:
            ids = None if keys is None else [_video_id(k) for k in keys]
            for vid, visual, words in self._embedding_rows(ids):
                blob = visual if which == "visual" else words
                if blob is not None:
                    yield int(vid, 16), np.frombuffer(blob, "<f4")[None, :]

        return load


def _descriptors(blob: bytes) -> CopyDescriptors | None:
    try:
        return CopyDescriptors.from_blob(blob)
    except ValueError as exc:
        raise StoreError(f"stored {exc}") from exc


def _index_key(logged_as: str, key: str) -> int:
    return int(key, 16) if logged_as == "video" else int(key)


def _video_id(key: int) -> str:
    return f"{key:016x}"


def _default_index_dir(url: str, instance: str) -> Path | None:
    """Beside a SQLite file; in the user cache for a server database; none in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return None
        db = Path(parsed.database)
        return db.with_name(db.name + "-index")
    digest = hashlib.sha256(f"{_safe(url)} {instance}".encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("reelscope")) / "index" / digest


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
