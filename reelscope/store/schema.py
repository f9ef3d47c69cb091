"""Database tables (SQLAlchemy 2).

Analysis: videos and the copyright library. Service: API keys, the job queue,
the webhook outbox and report thumbnails. Service times are epoch seconds
(floats), which compare the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class VideoRow(Base):
    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    filename: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    duration_s: Mapped[float] = mapped_column(Float)
    report_json: Mapped[str] = mapped_column(Text)
    visual_embedding: Mapped[bytes] = mapped_column(LargeBinary)
    text_embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ReferenceRow(Base):
    __tablename__ = "copyright_references"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    title: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    duration_s: Mapped[float] = mapped_column(Float)
    frame_step_s: Mapped[float] = mapped_column(Float)
    frame_hashes: Mapped[bytes] = mapped_column(LargeBinary)
    frame_quality: Mapped[bytes] = mapped_column(LargeBinary)
    audio_fp: Mapped[bytes] = mapped_column(LargeBinary)
    audio_item_s: Mapped[float] = mapped_column(Float)


class ReferenceDescriptorsRow(Base):
    """A reference's copy descriptors (``reelscope.tasks.copydetect``), a table of their
    own so that a library stored before them keeps working (on PDQ hashes)."""

    __tablename__ = "copyright_reference_descriptors"

    reference_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    descriptors: Mapped[bytes] = mapped_column(LargeBinary)


class ReferenceLandmarksRow(Base):
    """That a reference's audio landmarks (``reelscope.tasks.landmarks``) are stored, in
    which format, and its length in landmark frames. A reference stored before them has
    none and is matched on its Chromaprint fingerprint."""

    __tablename__ = "copyright_reference_landmarks"

    reference_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    format: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer)


class AudioHashRow(Base):
    """One audio landmark of a reference; looked up by hash, the way a query's landmarks
    find the references that share them."""

    __tablename__ = "copyright_audio_hashes"

    hash: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame: Mapped[int] = mapped_column(Integer, primary_key=True)


class StoreInfoRow(Base):
    """Facts about the database itself: ``instance``, a random id made with the tables,
    tells a database from another made anew at the same place."""

    __tablename__ = "store_info"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class IndexLogRow(Base):
    """A write to a row that a nearest-neighbour index holds (``reelscope.store.vectors``):
    ``name`` "reference" (copy descriptors' key frames) or "video" (embeddings), ``key``
    the row's key as text. Written in the same transaction as the row."""

    __tablename__ = "index_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(16), index=True)
    key: Mapped[str] = mapped_column(String(32))


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; not a secret
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    webhook_url: Mapped[str] = mapped_column(String(2000), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    """One upload by one key; its video id is the first 16 hex digits of the content sha256."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("key_id", "sha256", name="one_job_per_key_and_content"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    video_id: Mapped[str] = mapped_column(String(16), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255), default="")  # shown only, never a path
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued running done failed
    reason: Mapped[str] = mapped_column(Text, default="")
    stage: Mapped[str] = mapped_column(String(32), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(100), default="")
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class EventRow(Base):
    """A completion event, written with the job's final status and delivered afterwards."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending delivered failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ThumbnailRow(Base):
    __tablename__ = "thumbnails"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    time_s: Mapped[float] = mapped_column(Float)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
