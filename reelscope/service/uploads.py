"""Receive a multipart upload straight into the spool, within the size limit.

The body is parsed as it arrives (python-multipart's streaming parser): the
file part is written to a spool file named by a random id (the client's
filename is kept for display only, never used as a path) and hashed on the
way, and the upload is cut off with :class:`UploadTooLargeError` as soon as it
passes the limit, before the rest is read.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from reelscope.errors import EmptyInputError, InputError, UploadTooLargeError

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096  # text fields such as a reference title
HEADROOM = 64 * 1024  # multipart boundaries and headers around the file


@dataclass
class Upload:
    path: Path  # in the spool, named by a random id
    filename: str  # as the client sent it, for display only
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Receiver:
    def __init__(self, spool: Path, max_bytes: int) -> None:
        self.spool = spool
        self.max_bytes = max_bytes
        self.path = spool / f"upload-{uuid.uuid4().hex}"
        self.out: BinaryIO | None = None
        self.hasher = hashlib.sha256()
        self.size = 0
        self.filename = ""
        self.saw_file = False
        self.fields: dict[str, str] = {}
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._part: str | None = None  # field name of the part being read
        self._text = bytearray()

    # python-multipart callbacks
    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part = params.get(b"name", b"").decode("utf-8", "replace")
        self._headers = {}
        self._text = bytearray()
        if self._part == FILE_FIELD:
            if self.saw_file:
                raise InputError("send one file per upload")
            self.saw_file = True
            raw = params.get(b"filename", b"").decode("utf-8", "replace")
            self.filename = Path(raw.replace("\\", "/")).name[:255]
            self.out = self.path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == FILE_FIELD and self.out is not None:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise UploadTooLargeError(
                    f"the upload is over the {self.max_bytes / 1e6:g} MB limit"
                )
            self.hasher.update(chunk)
            self.out.write(chunk)
        else:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                raise InputError(f"form field {self._part!r} is too long")

    def on_part_end(self) -> None:
        if self._part == FILE_FIELD and self.out is not None:
            self.out.close()
            self.out = None
        elif self._part:
            self.fields[self._part] = self._text.decode("utf-8", "replace")
        self._part = None

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


async def receive(request: Request, spool: Path, max_bytes: int) -> Upload:
    """Stream the request's ``file`` part into ``spool``; raises InputError subclasses."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise InputError(
            f"send the video as multipart/form-data with a '{FILE_FIELD}' field"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + HEADROOM:
        raise UploadTooLargeError(
            f"the upload is {int(declared) / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit"
        )
    receiver = _Receiver(spool, max_bytes)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        receiver.close()
        receiver.path.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            raise InputError(f"the multipart body is malformed ({exc})") from exc
        if isinstance(exc, ClientDisconnect):
            raise InputError("the client went away before the upload ended") from exc
        raise
    receiver.close()
    if not receiver.saw_file:
        raise InputError(f"the form has no '{FILE_FIELD}' field")
    if receiver.size == 0:
        receiver.path.unlink(missing_ok=True)
        raise EmptyInputError("the uploaded file is empty (0 bytes)")
    return Upload(
        receiver.path, receiver.filename, receiver.size, receiver.hasher.hexdigest(),
        receiver.fields,
    )
