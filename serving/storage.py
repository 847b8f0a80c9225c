"""Durable, content-addressed storage of received instances and of result objects.

An incoming object is spooled into a per-request folder under ``<root>/tmp`` (the same file
system) while its SHA-256 is computed, then moved into
``<root>/instances/<tenant>/<aa>/<sha256>``, with the bytes and then the names flushed to disk
(:meth:`InstanceStore.commit_all`), so an acknowledged instance survives a power cut. Tenants
never share a folder, so one tenant's data can be exported or erased alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from serving.errors import StorageFullError

__all__ = ["InstanceStore", "SpoolWriter", "SpooledFile"]

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SpooledFile:
    """An incoming object written to a temporary file, with its digest and size."""

    path: Path
    sha256: str
    size_bytes: int
    name: str


class SpoolWriter:
    """One incoming object being written to a temporary file in ``folder`` and hashed."""

    def __init__(self, folder: Path, name: str) -> None:
        fd, path = tempfile.mkstemp(dir=folder, prefix="in-")
        self._out: BinaryIO = os.fdopen(fd, "wb")
        self.path = Path(path)
        self.name = name
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._digest.update(chunk)
        self._size += len(chunk)

    def close(self) -> SpooledFile:
        """The finished file, named by ``name`` (which may be set until now)."""
        self._out.close()
        return SpooledFile(self.path, self._digest.hexdigest(), self._size, self.name)

    def discard(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)


class InstanceStore:
    """The storage folder of one service."""

    def __init__(self, root: Path, *, min_free_bytes: int = 0) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.tmp_dir = root / "tmp"
        self.results_dir = root / "results"
        for folder in (self.tmp_dir, root / "instances", self.results_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def check_space(self, incoming_bytes: int = 0) -> None:
        """Refuse with :class:`StorageFullError` when ``incoming_bytes`` would eat the reserve."""
        free = shutil.disk_usage(self.root).free
        if free - incoming_bytes < self.min_free_bytes:
            raise StorageFullError(
                f"Storage has {free} bytes free and keeps a reserve of {self.min_free_bytes}; "
                "nothing was stored.",
                free_bytes=free,
                reserve_bytes=self.min_free_bytes,
            )

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        """A private folder for one request's spooled files, removed with whatever is left."""
        folder = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="req-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def spool(chunks: Iterable[bytes], name: str, folder: Path) -> SpooledFile:
        """Write ``chunks`` to a temporary file in ``folder``, hashing as it goes."""
        writer = SpoolWriter(folder, name)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.discard()
            raise
        return writer.close()

    def instance_path(self, tenant_id: str, sha256: str) -> Path:
        return self.root / "instances" / tenant_id / sha256[:2] / sha256

    def commit_all(self, spooled: Sequence[SpooledFile], tenant_id: str) -> list[Path]:
        """Move spooled files to their durable places (content already there is kept).

        The files' bytes are flushed before any is renamed into place, and the renames are
        flushed before this returns: two file-system flushes for the whole batch (``syncfs``),
        so a request of a thousand instances does not pay two thousand ``fsync`` calls.
        """
        targets = [self.instance_path(tenant_id, item.sha256) for item in spooled]
        moves = [(item, target) for item, target in zip(spooled, targets, strict=True)]
        fresh = [(item, target) for item, target in moves if not target.exists()]
        if fresh:
            self._flush([item.path for item, _ in fresh])
            for item, target in fresh:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item.path, target)
            self._flush(sorted({target.parent for _, target in fresh}))
        return targets

    def _flush(self, paths: Sequence[Path]) -> None:
        """Make ``paths`` (files or folders) durable: one ``syncfs`` of the storage's file
        system where Linux offers it, else an ``fsync`` of each."""
        if _syncfs(self.root):
            return
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def job_results_dir(self, tenant_id: str, job_id: str) -> Path:
        return self.results_dir / tenant_id / job_id


def _syncfs(folder: Path) -> bool:
    """Flush the file system holding ``folder``; False where ``syncfs`` is not available."""
    libc = _libc()
    if libc is None:
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", str(folder))
    finally:
        os.close(fd)
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "syncfs") else None
