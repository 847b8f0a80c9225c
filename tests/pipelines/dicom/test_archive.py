"""Untrusted zip archives: unpacked only when every member is safe and within limits."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from pipelines.dicom.archive import ArchiveLimits, extract_zip
from pipelines.dicom.index import index_inputs
from pipelines.errors import (
    ArchiveTooLargeError,
    ArchiveTooManyFilesError,
    CorruptArchiveError,
    UnsafeArchivePathError,
)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zipped_series_is_indexed_with_member_names(make_series, tmp_path):
    paths = make_series()
    archive = _zip(tmp_path / "study.zip", {f"CT/{p.name}": p.read_bytes() for p in paths})
    index = index_inputs([archive], workdir=tmp_path / "work")
    (study,) = index.studies
    assert study.series[0].analysable
    assert study.series[0].instances[0].display_name.startswith("study.zip!/CT/")


@pytest.mark.parametrize(
    "member", ["../evil.dcm", "/etc/evil.dcm", "a/../../evil.dcm", "C:/evil.dcm", "..\\evil.dcm"]
)
def test_member_escaping_the_archive_is_refused(tmp_path, member):
    archive = _zip(tmp_path / "bad.zip", {"ok.dcm": b"x", member: b"x"})
    with pytest.raises(UnsafeArchivePathError) as info:
        extract_zip(archive, tmp_path / "out")
    assert info.value.code == "archive.unsafe_path"
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.dcm").exists()


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchivePathError):
        extract_zip(archive, tmp_path / "out")


def test_archive_past_size_limit_is_refused_before_extraction(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"a.dcm": b"\0" * 2_000_000})  # compresses to ~2 kB
    with pytest.raises(ArchiveTooLargeError) as info:
        extract_zip(archive, tmp_path / "out", ArchiveLimits(max_total_bytes=1_000_000))
    assert info.value.detail["uncompressed_bytes"] == 2_000_000
    assert not (tmp_path / "out").exists()


def test_archive_past_file_count_is_refused(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"{i}.dcm": b"x" for i in range(11)})
    with pytest.raises(ArchiveTooManyFilesError) as info:
        extract_zip(archive, tmp_path / "out", ArchiveLimits(max_files=10))
    assert info.value.code == "archive.too_many_files"


def test_corrupt_zip_is_refused(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(CorruptArchiveError) as info:
        index_inputs([archive], workdir=tmp_path / "work")
    assert info.value.code == "archive.corrupt"
