"""The engine file: one self-checking container of manifest and compiled payload.

    offset 0   b"RSENGINE"               magic
           8   u32 little-endian          format version
          12   u64 little-endian          length H of the manifest
          20   H bytes                    manifest, UTF-8 JSON
        20+H   payload                    the backend's compiled model (size and
                                          sha256 recorded in the manifest)

A file that does not start with the magic, whose manifest does not parse, that is
shorter than its manifest says, or whose payload checksum differs is refused with
:class:`~reelscope.errors.EngineFileError`. Files are written atomically, so a
failed build leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import replace
from pathlib import Path

from reelscope.engine.manifest import FORMAT_VERSION, Manifest
from reelscope.errors import EngineFileError

MAGIC = b"RSENGINE"
_HEAD = struct.Struct("<8sIQ")
_MAX_MANIFEST = 16 << 20


def write(path: Path, manifest: Manifest, payload: bytes) -> Manifest:
    """Write the engine atomically; returns the manifest with the payload's size and sha256."""
    manifest = replace(
        manifest, payload_size=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest()
    )
    header = manifest.to_json().encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEAD.pack(MAGIC, FORMAT_VERSION, len(header)))
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def read_manifest(path: Path) -> tuple[Manifest, int]:
    """The manifest and the payload's offset; checks the file's length, not its checksum."""
    path = Path(path)
    if not path.is_file():
        raise EngineFileError(f"no engine file at {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size or not head.startswith(MAGIC):
            raise EngineFileError(f"{path} is not a reelscope engine file")
        _, version, length = _HEAD.unpack(head)
        if version > FORMAT_VERSION:
            raise EngineFileError(
                f"{path} has engine format {version}; this reelscope reads up to "
                f"{FORMAT_VERSION}: upgrade reelscope or rebuild the engine"
            )
        if length > _MAX_MANIFEST or _HEAD.size + length > size:
            raise EngineFileError(f"{path} is truncated or corrupt: its manifest is cut off")
        try:
            manifest = Manifest.from_dict(json.loads(f.read(length).decode()))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineFileError(
                f"{path} is corrupt: its manifest does not parse ({exc})") from exc
    offset = _HEAD.size + length
    if size != offset + manifest.payload_size:
        raise EngineFileError(
            f"{path} is truncated or corrupt: {size - offset} payload bytes, the manifest "
            f"says {manifest.payload_size}"
        )
    return manifest, offset


def read(path: Path) -> tuple[Manifest, bytes]:
    """Manifest and payload, the payload's checksum verified."""
    manifest, offset = read_manifest(path)
    with Path(path).open("rb") as f:
        f.seek(offset)
        payload = f.read()
    if hashlib.sha256(payload).hexdigest() != manifest.payload_sha256:
        raise EngineFileError(f"{path} is corrupt: the payload's checksum does not match")
    return manifest, payload
