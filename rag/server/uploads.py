"""Uploads: multipart files streamed straight to temporary files in the upload folder, with checked names,
types and a size limit, then renamed into place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request

from rag.server.errors import ServeError, one_line

# Multipart headers and boundaries on top of the files themselves.
UPLOAD_OVERHEAD = 64 * 1024


def safe_upload_name(raw: str) -> str:
    """A plain file name, or ServeError 400: no folders, no '..', no NULs, not hidden."""
    name = raw.strip()
    # A leading dot covers ".", ".." and hidden files; with no separators the name cannot leave the folder.
    if not name or name.startswith(".") or any(c in name for c in "/\\") or any(ord(c) < 32 for c in name):
        raise ServeError(400, f"upload file name {raw!r} is not a plain file name (no folders, '..' or NULs)")
    if len(name.encode("utf-8")) > 255:
        raise ServeError(400, "upload file name is longer than 255 bytes")
    return name


def _too_large(limit: int) -> ServeError:
    return ServeError(413, f"upload larger than the limit of {limit // (1024 * 1024)} MB (max_upload_mb)")


class _UploadSink:
    """Receives multipart parts and writes each file straight into a temporary file inside `folder`."""

    def __init__(self, folder: Path, limit: int, suffixes: frozenset[str]) -> None:
        self.folder, self.limit, self.suffixes = folder, limit, suffixes
        self.total = 0
        self.files: list[tuple[str, Path]] = []  # (final name, temporary path)
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._fh: Any = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
                "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        if b"filename" not in options:
            return  # a plain form field: ignored
        raw = options[b"filename"]
        try:
            name = safe_upload_name(raw.decode("utf-8"))
        except UnicodeDecodeError:
            name = safe_upload_name(raw.decode("latin-1"))
        suffix = Path(name).suffix.lower()
        if suffix not in self.suffixes:
            raise ServeError(415, f"{name}: unsupported file type {suffix or '(none)'} (supported: {', '.join(sorted(self.suffixes))})")
        self._fh = tempfile.NamedTemporaryFile(dir=self.folder, prefix=".upload-", suffix=".part", delete=False)
        self.files.append((name, Path(self._fh.name)))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._fh is None:
            return
        self.total += end - start
        if self.total > self.limit:
            raise _too_large(self.limit)
        self._fh.write(data[start:end])

    def on_part_end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def move_into_place(self) -> list[Path]:
        """Rename the received files to their names in the folder; returns their paths."""
        if not self.files:
            raise ServeError(400, "no file in the upload (send them as multipart/form-data file fields)")
        paths = []
        for name, tmp in self.files:
            final = self.folder / name
            if final.resolve().parent != self.folder:  # belt and braces: the name was checked already
                raise ServeError(400, f"upload file name {name!r} leaves the upload folder")
            os.replace(tmp, final)
            paths.append(final)
        self.files.clear()
        return paths

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        for _, tmp in self.files:
            tmp.unlink(missing_ok=True)


async def receive_uploads(request: Request, folder: Path, limit: int, suffixes: frozenset[str]) -> list[Path]:
    """Stream multipart files into `folder` (never elsewhere), at most `limit` bytes in all; returns their paths."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + UPLOAD_OVERHEAD:
        raise _too_large(limit)
    _, params = parse_options_header(request.headers.get("content-type"))
    if b"boundary" not in params:
        raise ServeError(400, "multipart body without a boundary")
    folder.mkdir(parents=True, exist_ok=True)
    sink = _UploadSink(folder, limit, suffixes)
    try:
        parser = MultipartParser(params[b"boundary"], sink.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        return sink.move_into_place()
    except FormParserError as exc:
        raise ServeError(400, f"malformed multipart body ({one_line(exc)[:120]})") from None
    finally:
        sink.discard()
