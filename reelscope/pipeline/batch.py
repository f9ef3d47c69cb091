"""Batch analysis of a video library (``reelscope batch``).

The paths given (files, folders searched for videos, ``@list.txt`` files of paths) are
analyzed here by one runtime with ``batch_in_flight`` videos at once (:func:`run_local`),
or by actors on a Ray cluster (:mod:`reelscope.pipeline.ray_cluster`). Every
report is stored by its content hash, so a re-run skips what is stored, and the same
content twice in one run is analyzed once (the first path to claim its hash analyzes
it; the others are reported as skipped with its id, or as failed when it failed).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from reelscope.config import Settings
from reelscope.digest import sha256_file
from reelscope.errors import InputError, InputNotFoundError, ReelscopeError
from reelscope.video.media import Checked, Limits, check_file, check_size, probe

if TYPE_CHECKING:
    from reelscope.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".3gp",
                            ".ts", ".mts", ".flv", ".wmv", ".mpg", ".mpeg"})
Status = Literal["done", "skipped", "failed", "duplicate"]


def collect(items: Iterable[str]) -> list[str]:
    """The paths to analyze, in order, each once: a file as given, a folder's videos
    (searched recursively, by suffix, sorted), the lines of an ``@list.txt`` (blank lines
    and ``#`` comments left out; relative paths are relative to the list's folder; URIs
    such as ``s3://bucket/clip.mp4`` are read through fsspec). A path that does not exist
    is kept: its analysis fails with a clear reason."""
    out: dict[str, None] = {}
    for item in items:
        for path in _expand(item):
            out.setdefault(path, None)
    return list(out)


def _expand(item: str) -> Iterator[str]:
    if item.startswith("@"):
        listing = Path(item[1:])
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{listing}: cannot read the list of videos: {exc}") from exc
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line)
                yield line if is_uri(line) or path.is_absolute() else str(listing.parent / path)
        return
    path = Path(item)
    if path.is_dir():
        yield from sorted(str(p) for p in path.rglob("*")
                          if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    else:
        yield str(path)


@dataclass(frozen=True)
class ItemResult:
    """What became of one path."""

    path: str
    status: Status
    video_id: str = ""
    error: str = ""
    duplicate_of: str = ""  # for "duplicate": the path that analyzes the same content


@dataclass
class Summary:
    """A run's outcome: ids analyzed and stored, ids skipped (stored before, or the same
    content as another path of the run), and the paths that failed with their reason."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> Summary:
        by_path = {r.path: r for r in results}
        summary = cls()
        for r in results:
            if r.status == "duplicate":
                first = by_path.get(r.duplicate_of)
                if first is not None and first.status in ("done", "skipped"):
                    r = ItemResult(r.path, "skipped", first.video_id)
                else:
                    why = first.error if first is not None else "not analyzed"
                    r = ItemResult(r.path, "failed", error=(
                        f"the same content as {r.duplicate_of}, which failed: {why}"))
            if r.status == "done":
                summary.done.append(r.video_id)
            elif r.status == "skipped":
                summary.skipped.append(r.video_id)
            else:
                summary.failed.append({"path": r.path, "error": r.error})
        return summary

    def to_json(self) -> str:
        return json.dumps({"done": self.done, "skipped": self.skipped, "failed": self.failed},
                          ensure_ascii=False)

    def line(self) -> str:
        return (f"{len(self.done)} done, {len(self.skipped)} already stored, "
                f"{len(self.failed)} failed")


class LocalClaims:
    """Which path of the run analyzes each content (thread-safe)."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, sha256: str, path: str) -> str:
        """``path`` when it is the first to ask for this content (or asks again, as a
        retry does), else the path that asked first."""
        with self._lock:
            return self._owners.setdefault(sha256, path)


class Claims(Protocol):
    """Who analyzes each content of a run: :class:`LocalClaims`, or on Ray an actor that
    holds them for every analysis actor."""

    def claim(self, sha256: str, path: str) -> str: ...


def analyze_item(analyzer: StoredAnalyzer, path: str, claims: Claims) -> ItemResult:
    """Analyze and store one path, unless its content is stored already or claimed by
    another path of the run; a bad file is a failed result with its reason, never an
    exception. A URI is fetched once, for the hash and the analysis."""
    try:
        with _local(path, analyzer.limits) as file:
            check_file(file, analyzer.limits)
            sha = sha256_file(file)
            stored = analyzer.stored_id(sha)
            if stored is not None:
                return ItemResult(path, "skipped", stored)
            owner = claims.claim(sha, path)
            if owner != path:
                return ItemResult(path, "duplicate", duplicate_of=owner)
            video_id, cached = analyzer.analyze_checked(
                file, Checked(sha, probe(file, analyzer.limits)), _name(path))
    except Exception as exc:
        return _failed(path, exc)
    return ItemResult(path, "skipped" if cached else "done", video_id)


def is_uri(path: str) -> bool:
    return "://" in path


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


@contextmanager
def _local(path: str, limits: Limits) -> Iterator[Path]:
    """``path`` as a local file: itself, or for a URI (``s3://...``, any protocol fsspec
    is configured for) a temporary copy, deleted afterwards; errors name the URI."""
    if not is_uri(path):
        yield Path(path)
        return
    import fsspec

    with tempfile.TemporaryDirectory(prefix="reelscope-batch-") as folder:
        local = Path(folder) / (_name(path) or "video")
        try:
            with fsspec.open(path, "rb") as src:
                size = getattr(src, "size", None)
                if size is not None:  # known before the copy: a huge file is not fetched
                    check_size(path, size, limits)
                with local.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
        except (OSError, ValueError, ImportError) as exc:
            raise InputNotFoundError(f"{path}: cannot read it: {exc}") from exc
        try:
            yield local
        except ReelscopeError as exc:  # the copy's path means nothing to the user
            raise type(exc)(str(exc).replace(str(local), path)) from exc


def _failed(path: str, exc: Exception) -> ItemResult:
    """A failed result: the error's one line, or for a bug (which must not stop a
    library's run) its type, with the trace in the log."""
    if isinstance(exc, ReelscopeError):
        return ItemResult(path, "failed", error=str(exc))
    log.error("internal error on %s", path, exc_info=exc)
    return ItemResult(path, "failed", error=f"internal error: {type(exc).__name__}: {exc}")


class StoredAnalyzer:
    """An :class:`~reelscope.pipeline.analyzer.Analyzer` over the settings' database and
    a runtime: what a batch worker (a thread here, an actor on Ray) analyzes with."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        from reelscope.pipeline.analyzer import Analyzer
        from reelscope.store.store import Store

        self.store = Store(settings.database_url)
        self.analyzer = Analyzer(settings, self.store, runtime)
        self.limits = self.analyzer.limits

    def stored_id(self, sha256: str) -> str | None:
        report = self.store.find_by_sha256(sha256)
        return None if report is None else report.video.id

    def analyze_checked(self, path: Path, checked: Checked, filename: str) -> tuple[str, bool]:
        outcome = self.analyzer.analyze(path, checked=checked, filename=filename)
        return outcome.report.video.id, outcome.cached


def run_local(paths: Sequence[str], settings: Settings,
              on_result: Callable[[ItemResult], None] = lambda r: None) -> list[ItemResult]:
    """Every path through one runtime on this machine, ``settings.batch_in_flight`` at a
    time; ``on_result`` is called as each one ends."""
    from reelscope.pipeline.runtime import Runtime

    claims = LocalClaims()
    with Runtime(settings) as runtime:
        analyzer = StoredAnalyzer(settings, runtime)

        def one(path: str) -> ItemResult:
            result = analyze_item(analyzer, path, claims)
            on_result(result)
            return result

        with ThreadPoolExecutor(settings.batch_in_flight,
                                thread_name_prefix="batch") as pool:
            return list(pool.map(one, paths))
