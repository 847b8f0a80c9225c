"""Streaming multipart bodies to disk: ``multipart/form-data`` uploads and STOW-RS
``multipart/related`` alike, one way.

Each part is written to a spool file in the request's workspace while it arrives, so a study of
any size never sits in memory. A body that ends before its closing boundary is refused whole
(:class:`MalformedMultipartError`): nothing of a truncated upload is kept. Client file names are
kept for messages only and never used as paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from serving.errors import MalformedMultipartError, TooManyPartsError, UnsupportedMediaTypeError
from serving.storage import SpooledFile, SpoolWriter

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["Part", "content_type_parameters", "spool_multipart"]


@dataclass(frozen=True)
class Part:
    """One body part on disk, with its headers (lower-case names)."""

    headers: dict[str, str]
    file: SpooledFile

    @property
    def content_type(self) -> str:
        return parse_options_header(self.headers.get("content-type", ""))[0].decode().lower()

    @property
    def is_file(self) -> bool:
        """A form-data part that carries a file (not a plain form field)."""
        return _filename(self.headers) is not None


def _filename(headers: dict[str, str]) -> str | None:
    disposition = headers.get("content-disposition")
    if not disposition:
        return None
    name = parse_options_header(disposition)[1].get(b"filename")
    return name.decode("utf-8", "replace") if name is not None else None


def content_type_parameters(header: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and parameters of a Content-Type header."""
    media, params = parse_options_header(header)
    return media.decode().lower(), {k.decode().lower(): v.decode() for k, v in params.items()}


async def spool_multipart(
    stream: AsyncIterator[bytes],
    content_type: str,
    expected: str,
    folder: Path,
    *,
    max_parts: int,
) -> list[Part]:
    """Write every part of a ``expected`` multipart body (e.g. ``multipart/related``) to disk.

    Raises:
        UnsupportedMediaTypeError: the body is not ``expected``.
        MalformedMultipartError: no boundary, or the body ends before its closing boundary.
        TooManyPartsError: more than ``max_parts`` parts.
    """
    media, params = content_type_parameters(content_type)
    if media != expected:
        raise UnsupportedMediaTypeError(
            f"This endpoint reads {expected}, not {media or 'an unspecified type'}.",
            content_type=media,
            expected=expected,
        )
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedMultipartError("The multipart Content-Type has no boundary parameter.")
    sink = _PartSink(folder, max_parts)
    parser = MultipartParser(boundary, sink.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
    except MultipartParseError as exc:
        raise MalformedMultipartError(
            f"The multipart body is malformed ({exc}); nothing of it was kept."
        ) from exc
    finally:
        sink.close()
    if not sink.ended:
        raise MalformedMultipartError(
            "The multipart body ended before its closing boundary (an interrupted upload?); "
            "nothing of it was kept.",
            n_parts_received=len(sink.parts),
        )
    return sink.parts


@dataclass
class _PartSink:
    """Receives the parser's callbacks and writes each part's bytes to its own file."""

    folder: Path
    max_parts: int
    parts: list[Part] = field(default_factory=list)
    ended: bool = False
    _headers: dict[str, str] = field(default_factory=dict)
    _field: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)
    _writer: SpoolWriter | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise TooManyPartsError(
                f"The request holds more than {self.max_parts} files.", limit=self.max_parts
            )
        self._headers = {}
        self._writer = SpoolWriter(self.folder, f"part-{len(self.parts) + 1}")

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is None:
            raise MalformedMultipartError("Part data arrived outside a part.")
        self._writer.write(data[start:end])

    def _part_end(self) -> None:
        if self._writer is None:
            raise MalformedMultipartError("A part ended that never began.")
        headers = dict(self._headers)
        self._writer.name = _filename(headers) or self._writer.name
        self.parts.append(Part(headers, self._writer.close()))
        self._writer = None

    def _end(self) -> None:
        self.ended = True

    def close(self) -> None:
        """Drop the file of a part the body never finished."""
        if self._writer is not None:
            self._writer.discard()
            self._writer = None
