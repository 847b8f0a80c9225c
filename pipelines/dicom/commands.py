"""``basira inspect``: what is in the input, what Basira would analyse, and why not the rest."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from pydicom.uid import UID
from rich.console import Console
from rich.table import Table

from pipelines.dicom.archive import ArchiveLimits
from pipelines.dicom.index import DicomIndex, SeriesEntry, index_inputs
from pipelines.dicom.selection import SelectionRules
from pipelines.errors import NoDicomFoundError


def inspect_command(
    paths: Annotated[list[Path], typer.Argument(help="Folders, zip archives or DICOM files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    min_slices: Annotated[int, typer.Option(help="Fewest slices an analysable series has.")] = 16,
    max_archive_mb: Annotated[int, typer.Option(help="Largest uncompressed archive (MiB).")] = 4096,
    max_archive_files: Annotated[int, typer.Option(help="Most files in one archive.")] = 20_000,
) -> None:
    """List studies and series with their verdict, and the files that were refused."""
    rules = SelectionRules(min_slices=min_slices)
    limits = ArchiveLimits(max_total_bytes=max_archive_mb * 1024**2, max_files=max_archive_files)
    with tempfile.TemporaryDirectory(prefix="basira-inspect-") as workdir:
        index = index_inputs(paths, workdir=Path(workdir), rules=rules, archive_limits=limits)
    if as_json:
        typer.echo(json.dumps(index_to_dict(index), indent=2))
    else:
        _print_tables(index)
    if not index.studies:
        first = index.rejected_files[0] if index.rejected_files else None
        raise NoDicomFoundError(
            "Nothing in the input is readable DICOM"
            + (f"; first refusal: {first.path}: [{first.code}] {first.message}" if first else "."),
        )


def index_to_dict(index: DicomIndex) -> dict[str, Any]:
    """The documented ``inspect --json`` shape."""
    return {
        "studies": [
            {
                "study_instance_uid": study.study_instance_uid,
                "series": [_series_dict(series) for series in study.series],
            }
            for study in index.studies
        ],
        "rejected_files": [
            {"path": r.path, "code": r.code, "message": r.message} for r in index.rejected_files
        ],
    }


def _series_dict(series: SeriesEntry) -> dict[str, Any]:
    first = series.instances[0]
    return {
        "series_instance_uid": series.series_instance_uid,
        "modality": series.modality,
        "n_instances": len(series.instances),
        "n_slices": series.n_slices,
        "rows": first.rows,
        "columns": first.columns,
        "pixel_spacing_mm": list(first.placements[0].pixel_spacing_mm)
        if first.placements
        else None,
        "slice_thickness_mm": first.slice_thickness_mm,
        "transfer_syntaxes": series.transfer_syntaxes,
        "series_description": first.series_description,
        "analysable": series.analysable,
        "selected": series.selected,
        "reasons": [{"code": r.code, "message": r.message} for r in series.reasons],
    }


def _print_tables(index: DicomIndex) -> None:
    console = Console()
    table = Table(title=f"{len(index.studies)} study(ies), {index.n_instances} instance(s)")
    for column in ("study", "series", "mod", "slices", "matrix", "spacing mm", "syntax", "verdict"):
        table.add_column(column, overflow="fold")
    for study in index.studies:
        for series in study.series:
            row = _series_dict(series)
            spacing = row["pixel_spacing_mm"] or []
            thickness = row["slice_thickness_mm"]
            verdict = (
                ("selected" if series.selected else "analysable")
                if series.analysable
                else "not analysable: " + ", ".join(r["code"] for r in row["reasons"])
            )
            table.add_row(
                "…" + study.study_instance_uid[-12:],
                "…" + series.series_instance_uid[-12:],
                row["modality"],
                str(row["n_slices"]),
                f"{row['rows']}x{row['columns']}",
                "x".join(f"{v:.3g}" for v in spacing)
                + (f" / {thickness:.3g}" if thickness else ""),
                ", ".join(UID(s).name for s in row["transfer_syntaxes"]),
                verdict,
            )
    console.print(table)
    if index.rejected_files:
        refused = Table(title=f"{len(index.rejected_files)} file(s) refused")
        for column in ("file", "code", "why"):
            refused.add_column(column, overflow="fold")
        for r in index.rejected_files:
            refused.add_row(r.path, r.code, r.message)
        console.print(refused)
