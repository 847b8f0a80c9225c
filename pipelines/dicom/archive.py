"""Unpack untrusted zip archives safely.

Every member is checked before a byte is written: no absolute paths, no ``..``, no links, no
more members and no more uncompressed bytes than the limits allow (the sizes a zip declares are
also enforced while streaming, so a lying header cannot inflate past them).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipelines.errors import (
    ArchiveTooLargeError,
    ArchiveTooManyFilesError,
    CorruptArchiveError,
    UnsafeArchivePathError,
)


@dataclass(frozen=True, kw_only=True)
class ArchiveLimits:
    """Bounds on what one archive may expand to (defaults fit a 2,000-slice CT study)."""

    max_total_bytes: int = 4 * 1024**3
    max_files: int = 20_000


@dataclass(frozen=True)
class ExtractedMember:
    """A file unpacked from an archive, and the name users know it by."""

    path: Path
    display_name: str  # "<archive>!/<member>"


def is_zip(path: Path) -> bool:
    """True when ``path`` is a zip container (by signature, not by extension)."""
    try:
        with open(path, "rb") as fh:
            return is_zip_signature(fh.read(4))
    except OSError:
        return False


def is_zip_signature(first_bytes: bytes) -> bool:
    """True when a file starting with ``first_bytes`` (at least 4) is a zip container."""
    return first_bytes[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a member may be written to, or :class:`UnsafeArchivePathError`."""
    normalised = name.replace("\\", "/")
    pure = PurePosixPath(normalised)
    if (
        normalised.startswith("/")
        or (len(normalised) > 1 and normalised[1] == ":")
        or any(part == ".." for part in pure.parts)
    ):
        raise UnsafeArchivePathError(
            f"Archive member '{name}' points outside the archive (absolute path or '..'); "
            "the archive was refused.",
            member=name,
        )
    return pure


def extract_zip(
    archive: Path, dest: Path, limits: ArchiveLimits | None = None
) -> list[ExtractedMember]:
    """Check every member of ``archive`` against ``limits``, then unpack the files into ``dest``.

    Raises:
        CorruptArchiveError: the zip cannot be read (bad central directory, CRC error).
        UnsafeArchivePathError: a member path is absolute, climbs with '..', or is a link.
        ArchiveTooManyFilesError / ArchiveTooLargeError: past the configured limits.
    """
    limits = limits or ArchiveLimits()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _checked_members(zf, archive.name, limits)
            return [_extract_one(zf, info, rel, dest, archive.name) for info, rel in members]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise CorruptArchiveError(
            f"{archive.name} is not a readable zip archive: {exc}", archive=archive.name
        ) from exc


def _checked_members(
    zf: zipfile.ZipFile, archive_name: str, limits: ArchiveLimits
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = [info for info in zf.infolist() if not info.is_dir()]
    if len(infos) > limits.max_files:
        raise ArchiveTooManyFilesError(
            f"{archive_name} holds {len(infos)} files; the limit is {limits.max_files}.",
            archive=archive_name,
            n_files=len(infos),
            limit=limits.max_files,
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise ArchiveTooLargeError(
            f"{archive_name} expands to {total} bytes; the limit is {limits.max_total_bytes}.",
            archive=archive_name,
            uncompressed_bytes=total,
            limit=limits.max_total_bytes,
        )
    checked = []
    for info in infos:
        rel = safe_member_path(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchivePathError(
                f"Archive member '{info.filename}' is a symbolic link; the archive was refused.",
                member=info.filename,
            )
        checked.append((info, rel))
    return checked


def _extract_one(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: PurePosixPath, dest: Path, archive_name: str
) -> ExtractedMember:
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, length=1024 * 1024)
    return ExtractedMember(target, f"{archive_name}!/{rel.as_posix()}")
