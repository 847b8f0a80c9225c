"""``basira inspect`` as a user runs it: a real subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.cli import Basira
from tests.pipelines.dicom.conftest import PYDICOM_FILES


def test_inspect_json_lists_series_verdicts_and_refused_files(
    basira: Basira, make_series, tmp_path
):
    paths = make_series()
    (tmp_path / "junk.txt").write_text("not dicom")
    result = basira.run(
        "inspect",
        "--json",
        str(paths[0].parent),
        str(tmp_path / "junk.txt"),
        str(PYDICOM_FILES / "MR_small.dcm"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    series = [s for study in report["studies"] for s in study["series"]]
    ct = next(s for s in series if s["modality"] == "CT")
    mr = next(s for s in series if s["modality"] == "MR")
    assert ct["analysable"] and ct["n_instances"] == 20 and ct["reasons"] == []
    assert not mr["analysable"] and mr["reasons"][0]["code"] == "dicom.not_ct"
    assert report["rejected_files"] == [
        {
            "path": str(tmp_path / "junk.txt"),
            "code": "dicom.not_dicom",
            "message": f"{tmp_path / 'junk.txt'} is not a DICOM file "
            "(no DICM preamble or file meta).",
        }
    ]


def test_inspect_table_names_the_verdict(basira, make_series):
    result = basira.run("inspect", str(make_series()[0].parent))
    assert result.returncode == 0
    assert "selected" in result.stdout and "CT" in result.stdout


def test_inspect_with_nothing_readable_exits_3_with_one_line(basira, tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    result = basira.run("inspect", str(tmp_path))
    assert result.returncode == 3
    assert result.stderr.startswith("error[input.no_dicom]: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_inspect_missing_path_exits_3(basira, tmp_path):
    result = basira.run("inspect", str(tmp_path / "nope"))
    assert result.returncode == 3
    assert result.stderr.strip() == f"error[input.not_found]: {tmp_path / 'nope'} does not exist."


def test_inspect_unsafe_archive_exits_3_with_code(basira, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../etc/cron.d/x", b"x")
    result = basira.run("inspect", str(archive))
    assert result.returncode == 3
    assert result.stderr.startswith("error[archive.unsafe_path]: ")
    assert not Path("/etc/cron.d/x").exists()


def test_inspect_usage_error_exits_2(
    basira: Basira,
):
    assert basira.run("inspect").returncode == 2
