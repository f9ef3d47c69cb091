"""Database tables (SQLAlchemy 2): analyzed videos and the copyright library."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, Text
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
