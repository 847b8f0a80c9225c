"""Which findings every output can show: the one rule, applied before the result JSON and any
writer is built.

A finding reaches the hospital in *every* output (result JSON, DICOM SEG, SR, FHIR, key images)
or in *none*. Findings are extracted on the model's grid, but every DICOM output describes them on
the source series' grid; a finding smaller than a source voxel, or lying between two source
slices, can cover no source voxel at all. A SEG segment needs at least one frame, the SR measures
on that segment's frames, so such a finding would break the SEG and SR (or, worse, appear in the
JSON and FHIR report while the PACS shows nothing). It is therefore left out of all of them, and
the result says which finding and why (``output.finding_not_representable``).

Why here, once, and not in each writer: the decision has to be the same for the JSON and for
every DICOM/FHIR object, whichever formats a run asks for, so it is taken on the source-grid mask
before the first of them is built (``pipelines.inference.predict`` calls
:func:`representable_findings` for every analysed study, JSON-only runs included). The
writers then only check that they were given representable findings
(:class:`~pipelines.reports.study.AnalysedStudy` refuses a finding without a voxel, and the SEG
self-check refuses a segment without a frame) instead of each deciding on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.errors import FindingNotRepresentableError
from pipelines.findings import Finding

__all__ = ["LeftOutFinding", "RepresentableFindings", "representable_findings"]


@dataclass(frozen=True)
class LeftOutFinding:
    """A finding no output shows, with the coded reason the result carries."""

    finding: Finding
    code: str
    message: str


@dataclass(frozen=True)
class RepresentableFindings:
    """The findings every output can show, the source-grid mask of exactly those, and the
    findings left out (in ascending id)."""

    findings: list[Finding]
    mask_kji: np.ndarray
    left_out: list[LeftOutFinding]


def representable_findings(
    findings: Sequence[Finding], mask_kji: np.ndarray
) -> RepresentableFindings:
    """Split ``findings`` into those every output can show and those left out of all outputs.

    Args:
        findings: calibrated findings whose ids label ``mask_kji``.
        mask_kji: uint8 ``[k, j, i]`` mask on the *source* grid, voxel value = finding id.

    A finding is representable when it covers at least one voxel of ``mask_kji`` and its
    centre, diameter, volume and confidence are finite numbers. The returned mask has the
    voxels of left-out findings cleared, so no output can show a label without its finding.
    """
    mask_u8 = np.asarray(mask_kji, dtype=np.uint8)
    # counted over the labelled voxels only: a few thousand, where the whole series is ~65 M
    counts = np.bincount(mask_u8[mask_u8 != 0], minlength=256)
    kept: list[Finding] = []
    left_out: list[LeftOutFinding] = []
    for finding in sorted(findings, key=lambda f: f.id):
        why = _why_not_representable(finding, int(counts[finding.id]))
        if why is None:
            kept.append(finding)
        else:
            left_out.append(
                LeftOutFinding(finding, FindingNotRepresentableError.code, _message(finding, why))
            )
    mask = mask_kji
    dropped = [item.finding.id for item in left_out if counts[item.finding.id]]
    if dropped:
        mask = np.where(np.isin(mask_kji, dropped), 0, mask_kji).astype(np.uint8)
    return RepresentableFindings(kept, mask, left_out)


def _why_not_representable(finding: Finding, n_voxels: int) -> str | None:
    numbers = [*finding.center_lps_mm, *finding.center_ijk, finding.diameter_mm, finding.volume_ml]
    if finding.confidence is not None:
        numbers.append(finding.confidence)
    if not all(math.isfinite(value) for value in numbers):
        return "a measurement of it is not a finite number"
    if n_voxels == 0:
        return (
            "it covers no voxel of the source series' grid (smaller than a source voxel, "
            "or between two source slices)"
        )
    return None


def _message(finding: Finding, why: str) -> str:
    return (
        f"AI finding {finding.id} ({finding.diameter_mm:.2f} mm, {finding.volume_ml:.3f} ml) "
        f"is left out of every output: {why}."
    )
