"""Report thumbnails, stored once per content (sha256)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from reelscope.errors import NotFoundError
from reelscope.store.schema import ThumbnailRow
from reelscope.store.store import Store


class Thumbnails:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, sha256: str, thumbs: Sequence[tuple[float, bytes]]) -> None:
        with self.store.session() as s:
            s.execute(delete(ThumbnailRow).where(ThumbnailRow.sha256 == sha256))
            for i, (t, jpeg) in enumerate(thumbs):
                s.add(ThumbnailRow(sha256=sha256, index=i, time_s=round(t, 3), jpeg=jpeg))

    def times(self, sha256: str) -> list[float]:
        with self.store.session() as s:
            return list(
                s.scalars(
                    select(ThumbnailRow.time_s)
                    .where(ThumbnailRow.sha256 == sha256)
                    .order_by(ThumbnailRow.index)
                )
            )

    def jpeg(self, sha256: str, index: int) -> bytes:
        with self.store.session() as s:
            row = s.get(ThumbnailRow, (sha256, index))
            if row is None:
                raise NotFoundError(f"no thumbnail {index}")
            return row.jpeg
