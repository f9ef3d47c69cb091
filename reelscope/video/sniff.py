"""Tell what a file is from its first bytes, never from its name."""

from __future__ import annotations

from pathlib import Path

# (offset, magic bytes, kind, is a video container)
_SIGNATURES: tuple[tuple[int, bytes, str, bool], ...] = (
    (4, b"ftyp", "MP4/QuickTime", True),
    (4, b"moov", "QuickTime", True),
    (4, b"mdat", "QuickTime", True),
    (4, b"free", "QuickTime", True),
    (4, b"wide", "QuickTime", True),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM", True),
    (0, b"FLV", "FLV", True),
    (0, b"\x00\x00\x01\xba", "MPEG program stream", True),
    (0, b"\x47", "MPEG transport stream", True),
    (0, b"%PDF", "PDF document", False),
    (0, b"\x89PNG", "PNG image", False),
    (0, b"\xff\xd8\xff", "JPEG image", False),
    (0, b"GIF8", "GIF image", False),
    (0, b"ID3", "MP3 audio", False),
    (0, b"fLaC", "FLAC audio", False),
    (0, b"OggS", "Ogg", True),
    (0, b"PK\x03\x04", "ZIP archive", False),
)


def sniff(path: Path) -> tuple[str, bool]:
    """Return (kind, looks like a video container) for the file at ``path``."""
    with path.open("rb") as fh:
        head = fh.read(64)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI", True
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV audio", False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP image", False
    for offset, magic, kind, is_video in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if kind == "MPEG transport stream" and not _ts_sync(path):
                continue
            return kind, is_video
    if head and _is_text(head):
        return "text file", False
    return "unknown data", False


def _ts_sync(path: Path) -> bool:
    with path.open("rb") as fh:
        data = fh.read(188 * 4)
    return len(data) >= 188 * 3 and all(data[i * 188] == 0x47 for i in range(3))


def _is_text(head: bytes) -> bool:
    for cut in range(4):  # the 64-byte window may end inside a multi-byte character
        try:
            head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(b >= 0x20 or b in b"\t\r\n\f" for b in head)
    return False
