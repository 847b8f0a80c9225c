"""One analysed study: everything the output writers need, checked once, in one place.

Every writer (SEG, SR, FHIR, key images) and the geometry self-check take an
:class:`AnalysedStudy`. It ties the source :class:`~pipelines.volume.Volume` (array order
``[k, j, i]``, voxel-to-LPS affine), the headers of the source instances, the findings mask on the
source grid and the calibrated findings together, and refuses combinations that cannot describe
the same study (a mask of another shape, a label with no finding, headers of another series).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pipelines.findings import Finding
from pipelines.volume import Volume

__all__ = [
    "AlgorithmInfo",
    "AnalysedStudy",
    "StudyConclusion",
    "confidence_of",
    "read_source_headers",
]


@dataclass(frozen=True)
class AlgorithmInfo:
    """The model that produced the findings, as every output identifies it."""

    name: str
    version: str
    manufacturer: str = "Basira"

    @property
    def label(self) -> str:
        """``"name version"``, the form burned into key images and written into reports."""
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class StudyConclusion:
    """The study-level result: calibrated probability of a tumour and the label at the model's
    operating point (e.g. ``"tumour suspected"`` / ``"no tumour suspected"``)."""

    label: str
    probability: float
    operating_point: float


@dataclass(frozen=True, eq=False)
class AnalysedStudy:
    """A source series, its findings and the model that found them.

    ``findings_mask`` has the source volume's shape ``[k, j, i]`` (uint8); voxel value ``n > 0``
    belongs to the finding whose ``id`` is ``n``. ``source_headers`` are the datasets of the
    source instances (pixels not needed) in any order; single-frame instances only, one per
    slice, as :attr:`Volume.provenance` lists them. ``key_image_ids`` are the findings that get
    a key image (``None``: every finding; ``basira predict`` picks those behind a positive
    label). ``created`` stamps every written object.

    Every finding must cover at least one voxel of ``findings_mask``: a finding no output can
    show is left out of all of them before a study is built
    (:func:`~pipelines.reports.representable.representable_findings`).

    Raises:
        ValueError: the parts do not describe the same study (see :meth:`__post_init__`).
    """

    volume: Volume
    source_headers: Sequence[Dataset]
    findings_mask: np.ndarray
    findings: Sequence[Finding]
    algorithm: AlgorithmInfo
    conclusion: StudyConclusion | None = None
    key_image_ids: frozenset[int] | None = None
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        """Refuse a mask, findings or headers that do not belong to this volume."""
        if self.findings_mask.shape != self.volume.shape:
            raise ValueError(
                f"findings_mask has shape {self.findings_mask.shape}, "
                f"the source volume {self.volume.shape}"
            )
        ids = [finding.id for finding in self.findings]
        if len(set(ids)) != len(ids) or any(i < 1 or i > 255 for i in ids):
            raise ValueError(f"finding ids must be unique and in 1..255, got {ids}")
        for finding in self.findings:
            confidence_of(finding)
        if self.key_image_ids is not None and not self.key_image_ids <= set(ids):
            raise ValueError(f"key_image_ids {sorted(self.key_image_ids)} are not all findings")
        mask = self.findings_mask
        present = set(np.unique(mask[mask != 0]).tolist())  # few voxels: no full sort
        stray = present - set(ids)
        if stray:
            raise ValueError(f"findings_mask holds labels without a finding: {sorted(stray)}")
        empty = sorted(set(ids) - present)
        if empty:
            raise ValueError(
                f"findings {empty} cover no voxel of findings_mask: no SEG segment or SR "
                "measurement can show them (leave them out with representable_findings)"
            )
        self.headers_in_volume_order  # noqa: B018 - validates the headers now, not at first use

    @cached_property
    def headers_in_volume_order(self) -> list[Dataset]:
        """The source headers ordered like the volume's slices (``k = 0`` first)."""
        uids = self.volume.provenance.sop_instance_uids
        if len(set(uids)) != len(uids) or len(uids) != self.volume.shape[0]:
            raise ValueError("outputs need a single-frame source series (one instance per slice)")
        by_uid = {str(ds.SOPInstanceUID): ds for ds in self.source_headers}
        missing = [uid for uid in uids if uid not in by_uid]
        if missing or len(by_uid) != len(uids):
            raise ValueError(
                f"source_headers do not match the volume's slices ({len(missing)} missing, "
                f"{len(by_uid)} given for {len(uids)} slices)"
            )
        return [_with_empty_type2(by_uid[uid]) for uid in uids]

    @property
    def reference_header(self) -> Dataset:
        """The header whose patient and study attributes every output copies."""
        return self.headers_in_volume_order[0]

    def segment_number(self, finding: Finding) -> int:
        """1-based segment (and SR measurement group) number of ``finding``: findings are
        numbered in ascending id order, so numbers stay contiguous when ids are not."""
        return sorted(f.id for f in self.findings).index(finding.id) + 1

    def ordered_findings(self) -> list[Finding]:
        """The findings in segment-number order."""
        return sorted(self.findings, key=lambda f: f.id)

    def key_image_findings(self) -> list[Finding]:
        """The findings that get a key image, in ascending id."""
        wanted = self.key_image_ids
        return [f for f in self.ordered_findings() if wanted is None or f.id in wanted]

    def tracking_uid(self, finding: Finding) -> str:
        """The Tracking UID shared by the finding's SEG segment and SR measurement group.

        Derived from the series, the model and the finding, so SEG and SR written separately
        still agree, and another model's or series' finding never gets the same UID.
        """
        centre = ",".join(f"{v:.3f}" for v in finding.center_lps_mm)
        return str(
            generate_uid(
                entropy_srcs=[
                    self.volume.provenance.series_instance_uid,
                    self.algorithm.label,
                    str(finding.id),
                    centre,
                ]
            )
        )

    def nearest_slice(self, finding: Finding) -> int:
        """Index ``k`` of the source slice nearest the finding's centre (from LPS, so a centre
        computed on another grid still lands on the right source slice)."""
        k = float(self.volume.lps_to_ijk(np.asarray(finding.center_lps_mm))[2])
        return int(np.clip(round(k), 0, self.volume.shape[0] - 1))


def confidence_of(finding: Finding) -> float:
    """The calibrated confidence every output reports.

    Raises:
        ValueError: the finding was never calibrated (outputs never show a raw score).
    """
    if finding.confidence is None:
        raise ValueError(f"finding {finding.id} has no calibrated confidence")
    return float(finding.confidence)


#: Type 2 patient/study attributes every derived object copies: present, possibly empty.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _with_empty_type2(header: Dataset) -> Dataset:
    """A copy of ``header`` in which absent Type 2 patient/study attributes are present and
    empty, as the standard allows: derived objects copy them and need them to exist. Values
    are never made up."""
    copy = Dataset(header)
    for keyword in _TYPE2_COPIED:
        if keyword not in copy:
            setattr(copy, keyword, "")
    return copy


def read_source_headers(paths: Sequence[Path]) -> list[Dataset]:
    """The headers (no pixel data) of the source instance files, for :class:`AnalysedStudy`."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
