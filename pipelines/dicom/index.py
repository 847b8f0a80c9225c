"""Index whatever a user hands over: folders, zips and files become studies, series and refusals.

Only headers are read. Every file ends either in a series or in ``rejected_files`` with a code,
so nothing a hospital sends disappears without a reason.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.dicom.archive import ArchiveLimits, extract_zip, is_zip
from pipelines.dicom.geometry import GeometryTolerances, StackedGeometry, stack_slices
from pipelines.dicom.header import MEDIA_STORAGE_DIRECTORY, InstanceHeader, read_header
from pipelines.dicom.selection import Reason, SelectionRules, assess_series, series_placements
from pipelines.errors import BasiraError, InputNotFoundError, NotAnImageError


@dataclass(frozen=True)
class RejectedFile:
    """A file that could not be used, and why."""

    path: str
    code: str
    message: str


@dataclass
class SeriesEntry:
    """One series of a study with its verdict."""

    study_instance_uid: str
    series_instance_uid: str
    instances: list[InstanceHeader]
    reasons: list[Reason] = field(default_factory=list)
    selected: bool = False
    #: (tolerances, the instances stacked, the stack) from indexing; see stacked_geometry
    _stacked: tuple[GeometryTolerances, tuple[InstanceHeader, ...], StackedGeometry] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def analysable(self) -> bool:
        return not self.reasons

    @property
    def n_slices(self) -> int:
        return sum(inst.n_frames for inst in self.instances)

    @property
    def modality(self) -> str:
        return self.instances[0].modality

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({inst.transfer_syntax_uid for inst in self.instances})

    def stacked_geometry(self, tolerances: GeometryTolerances) -> StackedGeometry:
        """The series' frames ordered and checked under ``tolerances`` (see ``stack_slices``).

        Indexing already stacked the series to judge it; that stack is reused when it was
        checked under equal tolerances and ``instances`` still holds the same headers, and is
        computed (and kept) here otherwise.

        Raises:
            The errors of :func:`~pipelines.dicom.geometry.stack_slices`.
        """
        kept = self._stacked
        if (
            kept is not None
            and kept[0] == tolerances
            and len(kept[1]) == len(self.instances)
            and all(a is b for a, b in zip(kept[1], self.instances, strict=True))
        ):
            return kept[2]
        stacked = stack_slices(series_placements(self.instances), tolerances)
        self._stacked = (tolerances, tuple(self.instances), stacked)
        return stacked


@dataclass
class StudyEntry:
    study_instance_uid: str
    series: list[SeriesEntry]

    @property
    def selected_series(self) -> SeriesEntry | None:
        """The series Basira would analyse for this study, if any is analysable."""
        return next((s for s in self.series if s.selected), None)


@dataclass
class DicomIndex:
    studies: list[StudyEntry]
    rejected_files: list[RejectedFile]

    @property
    def n_instances(self) -> int:
        return sum(len(s.instances) for study in self.studies for s in study.series)


def index_inputs(
    inputs: Sequence[Path],
    *,
    workdir: Path,
    rules: SelectionRules | None = None,
    archive_limits: ArchiveLimits | None = None,
) -> DicomIndex:
    """Read the headers of every file under ``inputs`` and judge each series.

    Zip archives are unpacked (safely) under ``workdir``, which must outlive the index since
    instance paths point into it. A user-named path that does not exist raises
    :class:`InputNotFoundError`; an unsafe or oversized archive raises its archive error.
    """
    headers: list[InstanceHeader] = []
    rejected: list[RejectedFile] = []
    for path, name in _expand(inputs, workdir, archive_limits or ArchiveLimits()):
        header = header_or_refusal(path, name)
        if isinstance(header, RejectedFile):
            rejected.append(header)
        else:
            headers.append(header)
    return build_index(headers, rejected, rules or SelectionRules())


def header_or_refusal(
    path: Path, name: str, fh: io.RawIOBase | None = None
) -> InstanceHeader | RejectedFile:
    """``path``'s header, or why the file cannot be used (``fh``: the file, if already open)."""
    try:
        header = read_header(path, name, fh)
    except BasiraError as exc:
        return RejectedFile(name, exc.code, exc.message)
    if header.sop_class_uid == MEDIA_STORAGE_DIRECTORY:
        return RejectedFile(
            name, NotAnImageError.code, f"{name} is a DICOMDIR (an index of files)."
        )
    return header


def build_index(
    headers: list[InstanceHeader], rejected: list[RejectedFile], rules: SelectionRules
) -> DicomIndex:
    """Group ``headers`` (in the order read) into studies and series and judge each series."""
    return DicomIndex(_group(headers, rules), rejected)


def walk_files(given: Path) -> Iterator[Path]:
    """``given`` itself if a file, else every file under it, in a stable (sorted) order.

    Raises:
        InputNotFoundError: ``given`` does not exist.
    """
    if not given.exists():
        raise InputNotFoundError(f"{given} does not exist.", path=str(given))
    yield from _walk(given)


def _expand(
    inputs: Sequence[Path], workdir: Path, limits: ArchiveLimits
) -> Iterator[tuple[Path, str]]:
    archives = 0
    for given in inputs:
        for path in walk_files(given):
            if is_zip(path):
                archives += 1
                dest = workdir / f"archive-{archives:04d}"
                for member in extract_zip(path, dest, limits):
                    yield member.path, member.display_name
            else:
                yield path, str(path)


def _walk(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        folder = Path(root)
        for name in sorted(files):
            yield folder / name


def _group(headers: list[InstanceHeader], rules: SelectionRules) -> list[StudyEntry]:
    by_series: dict[tuple[str, str], list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        by_series[(header.study_instance_uid, header.series_instance_uid)].append(header)
    by_study: dict[str, list[SeriesEntry]] = defaultdict(list)
    for (study_uid, series_uid), instances in sorted(by_series.items()):
        entry = SeriesEntry(study_uid, series_uid, instances)
        assessment = assess_series(instances, rules)
        entry.reasons = assessment.reasons
        if assessment.geometry is not None:
            entry._stacked = (rules.geometry, tuple(instances), assessment.geometry)
        by_study[study_uid].append(entry)
    studies = [StudyEntry(uid, series) for uid, series in sorted(by_study.items())]
    for study in studies:
        _select(study)
    return studies


def _select(study: StudyEntry) -> None:
    """Mark the analysable series to read: thinnest slices first, then the most slices."""
    candidates = [s for s in study.series if s.analysable]
    if not candidates:
        return
    best = min(
        candidates,
        key=lambda s: (s.instances[0].slice_thickness_mm or float("inf"), -s.n_slices),
    )
    best.selected = True
