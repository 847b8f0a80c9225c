"""AnalysedStudy refuses parts that cannot describe the same study."""

from __future__ import annotations

from dataclasses import replace

import pytest


def test_mask_of_another_shape_is_refused(make_study):
    study = make_study()
    with pytest.raises(ValueError, match="shape"):
        replace(study, findings_mask=study.findings_mask[1:])


def test_mask_label_without_a_finding_is_refused(make_study):
    study = make_study()
    mask = study.findings_mask.copy()
    mask[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"labels without a finding: \[9\]"):
        replace(study, findings_mask=mask)


def test_uncalibrated_finding_is_refused(make_study):
    study = make_study()
    raw = [replace(f, confidence=None) for f in study.findings]
    with pytest.raises(ValueError, match="no calibrated confidence"):
        replace(study, findings=raw)


def test_headers_of_another_series_are_refused(make_study):
    study, other = make_study(), make_study()
    with pytest.raises(ValueError, match="source_headers do not match"):
        replace(study, source_headers=other.source_headers)


def test_headers_are_put_in_volume_order_whatever_the_file_order(make_study):
    study = make_study(step_mm=-1.25, shuffle=True)
    ordered = study.headers_in_volume_order
    z = [float(ds.ImagePositionPatient[2]) for ds in ordered]
    assert z == sorted(z)
    assert [ds.SOPInstanceUID for ds in ordered] == list(study.volume.provenance.sop_instance_uids)
    assert all("PatientBirthDate" in ds for ds in ordered)
