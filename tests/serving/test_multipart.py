"""The streaming multipart reader: parts land on disk with their digests; broken bodies are
refused whole with a precise code, and their spool files do not outlive the request."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serving.errors import MalformedMultipartError, TooManyPartsError, UnsupportedMediaTypeError
from serving.multipart import Part, spool_multipart

BOUNDARY = "b0undary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body(*payloads: bytes, close: bool = True) -> bytes:
    out = b""
    for payload in payloads:
        out += (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + b"\r\n"
        )
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def spool(
    data: bytes, folder: Path, content_type: str = RELATED, max_parts: int = 10
) -> list[Part]:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 7):  # tiny chunks: boundaries split across reads
            yield data[start : start + 7]

    return asyncio.run(
        spool_multipart(chunks(), content_type, "multipart/related", folder, max_parts=max_parts)
    )


def test_parts_are_written_to_disk_with_their_digest_and_headers(tmp_path: Path) -> None:
    parts = spool(body(b"first\r\n--not-a-boundary", b"second"), tmp_path)
    assert [p.file.path.read_bytes() for p in parts] == [b"first\r\n--not-a-boundary", b"second"]
    assert parts[1].file.sha256 == hashlib.sha256(b"second").hexdigest()
    assert parts[0].content_type == "application/dicom"


def test_body_without_closing_boundary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedMultipartError, match="closing boundary"):
        spool(body(b"cut short", close=False)[:-4], tmp_path)


def test_part_with_broken_header_block_is_refused_not_a_server_error(tmp_path: Path) -> None:
    broken = f"--{BOUNDARY}\r\n3.1559e+16--{BOUNDARY}--\r\n".encode()
    with pytest.raises(MalformedMultipartError, match="malformed"):
        spool(broken, tmp_path)


def test_more_parts_than_the_limit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TooManyPartsError):
        spool(body(b"a", b"b", b"c"), tmp_path, max_parts=2)


def test_missing_boundary_and_wrong_media_type_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedMultipartError, match="boundary"):
        spool(body(b"a"), tmp_path, content_type='multipart/related; type="application/dicom"')
    with pytest.raises(UnsupportedMediaTypeError):
        spool(body(b"a"), tmp_path, content_type="application/json")
