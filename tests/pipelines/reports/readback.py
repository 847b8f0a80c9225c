"""Read every written output back with libraries that are not ours (highdicom for SEG and SR,
fhir.resources for FHIR) and check it says what the result JSON says, finding by finding.

Used by the property tests: whatever geometry and findings were generated, a released object
must agree with the findings the JSON reports, and a finding left out of the JSON must be in no
object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from pipelines.reports import codes as basira_codes

__all__ = ["ExpectedFinding", "check_released_outputs"]


@dataclass(frozen=True)
class ExpectedFinding:
    """What the result JSON says of one finding, and (when the caller knows them) its Tracking
    UID and its voxels on the source grid; unknown ones are not compared (a segment must still
    have at least one voxel)."""

    id: int
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    volume_ml: float
    confidence: float
    tracking_uid: str | None = None
    mask_kji: np.ndarray | None = None


def check_released_outputs(
    out: Path,
    study_uid: str,
    source_uids: list[str],
    findings: list[ExpectedFinding],
    key_ids: set[int] | None,
) -> None:
    """Every object in ``out`` agrees with ``findings``; raises AssertionError otherwise.

    ``source_uids``: the source SOP Instance UIDs in slice order ``k``. With no finding there
    must be no SEG, SR or key image (a SEG needs a segment), only the FHIR report. ``key_ids``:
    the findings that must have a key image (None: any of ``findings`` may).
    """
    if findings:
        _check_seg(out / f"{study_uid}.seg.dcm", source_uids, findings)
        _check_sr(out / f"{study_uid}.sr.dcm", findings)
    else:
        assert not (out / f"{study_uid}.seg.dcm").exists()
        assert not (out / f"{study_uid}.sr.dcm").exists()
    _check_fhir(out / f"{study_uid}.fhir.json", findings)
    keys = sorted(out.glob(f"{study_uid}.key-*.dcm"))
    with_key = {int(p.name.rsplit("-", 1)[1].split(".")[0]) for p in keys}
    assert with_key == key_ids if key_ids is not None else with_key <= {f.id for f in findings}
    for path in keys:
        image = pydicom.dcmread(path)
        assert image.SourceImageSequence[0].ReferencedSOPInstanceUID in source_uids


def _check_seg(path: Path, source_uids: list[str], findings: list[ExpectedFinding]) -> None:
    seg = hd.seg.segread(path)
    numbers = list(seg.get_segment_numbers())
    assert len(numbers) == len(findings)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )  # (slices, rows, columns, segments)
    for number, finding in zip(numbers, sorted(findings, key=lambda f: f.id), strict=True):
        description = seg.get_segment_description(number)
        assert description.segment_label == f"AI finding {finding.id}"
        if finding.tracking_uid is not None:
            assert str(description.tracking_uid) == finding.tracking_uid
        mask = pixels[..., numbers.index(number)] > 0
        assert mask.any(), f"segment {number} (finding {finding.id}) has no voxel"
        if finding.mask_kji is not None:
            assert np.array_equal(mask, finding.mask_kji), f"finding {finding.id}: voxels differ"


def _check_sr(path: Path, findings: list[ExpectedFinding]) -> None:
    report = hd.sr.MeasurementReport.from_sequence([hd.sr.srread(path)])
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(findings)
    by_uid = {str(g.tracking_uid): g for g in groups}
    by_label = {str(g.tracking_identifier): g for g in groups}
    for finding in findings:
        if finding.tracking_uid is not None:
            group = by_uid[finding.tracking_uid]
        else:
            group = by_label[f"AI finding {finding.id}"]
        point = np.asarray(group.roi.graphic_data[0], float).reshape(-1)
        assert np.allclose(point, finding.center_lps_mm, atol=1e-2)
        values = {m.name.value: float(m.value) for m in group.get_measurements()}
        assert np.isclose(values[basira_codes.DIAMETER.value], finding.diameter_mm, rtol=1e-6)
        assert np.isclose(values[basira_codes.VOLUME.value], finding.volume_ml, rtol=1e-6)
        assert np.isclose(
            values[basira_codes.CERTAINTY_OF_FINDING.value], finding.confidence, rtol=1e-6
        )


def _check_fhir(path: Path, findings: list[ExpectedFinding]) -> None:
    bundle = Bundle.model_validate(json.loads(path.read_text(encoding="utf-8")))
    resources = [entry.resource for entry in bundle.entry or []]
    report, *observations = resources
    assert isinstance(report, DiagnosticReport)
    assert len(report.result or []) == len(findings) == len(observations)
    assert f"{len(findings)} AI finding(s)" in (report.conclusion or "")
    by_id = {f"AI finding {f.id}: lung nodule": f for f in findings}
    for observation in observations:
        assert isinstance(observation, Observation)
        finding = by_id[observation.code.text]
        quantities = {
            c.code.coding[0].code: float(c.valueQuantity.value) for c in observation.component
        }
        assert np.isclose(quantities[basira_codes.DIAMETER.value], finding.diameter_mm, atol=1e-6)
        assert np.isclose(quantities[basira_codes.VOLUME.value], finding.volume_ml, atol=1e-6)
        assert np.isclose(
            quantities[basira_codes.CERTAINTY_OF_FINDING.value], finding.confidence, atol=1e-6
        )
