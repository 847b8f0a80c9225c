"""The bundle's calibration: fit on the validation split, stored beside ``bundle.yaml``.

``calibration.json`` holds two calibrators of one method: per finding (raw score → probability
that the finding is a true lesion, fit on each finding's hit/miss from
:func:`~pipelines.evaluation.report.finding_outcomes`) and per study (study score → probability
that the study holds a lesion), the study operating point for a target sensitivity (a threshold
on the *calibrated* study probability), and what they were fit on (data folder, split, content
hash, counts). The study score the study calibrator maps is the best finding's score or a
noisy-OR of every calibrated finding, whichever ranks the split's studies better (recorded).
The bundle's ``calibration`` field names the file and ``operating_point`` repeats the
threshold, so serving reads both from the bundle.

Optionally the findings threshold (the probability a voxel needs to belong to a finding) is
chosen on the same split first: the candidate with the best CPM (then the best study AUC, then
the higher threshold), recorded with every candidate's CPM and study AUC and written to the
bundle's ``findings.threshold``; the calibrators are then fit on the findings at that threshold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import yaml
from pydantic import ValidationError

from pipelines.bundle import Bundle, load_bundle, write_bundle
from pipelines.calibration import (
    CALIBRATION_FILE,
    BundleCalibration,
    CalibrationMethod,
    Calibrator,
    FindingsThresholdChoice,
    FittedOn,
    StoredOperatingPoint,
)
from pipelines.evaluation.calibration import fit_calibrator
from pipelines.evaluation.classification import compute_roc_auc, operating_point_for_sensitivity
from pipelines.evaluation.froc import compute_froc
from pipelines.evaluation.predictions import DataInfo
from pipelines.evaluation.report import CaseRecord, finding_outcomes
from pipelines.findings import StudyScore, calibrate_findings, study_score

#: Temperature: one parameter cannot over-fit a small validation split (docs/evaluation.md).
DEFAULT_METHOD = CalibrationMethod.TEMPERATURE


def choose_study_score(
    records: Sequence[CaseRecord], finding_calibrator: Calibrator
) -> tuple[StudyScore, dict[str, float | None]]:
    """The study score (:data:`~pipelines.findings.StudyScore`) with the better study AUC on
    ``records`` once their findings are calibrated; ``max`` on a tie. Returns it and each
    candidate's AUC."""
    labels = np.array([bool(record.lesions) for record in records])
    calibrated = [calibrate_findings(record.findings, finding_calibrator) for record in records]
    auc: dict[str, float | None] = {}
    for method in get_args(StudyScore):
        scores = np.array([study_score(found, method) for found in calibrated])
        value = compute_roc_auc(scores, labels)
        auc[method] = None if np.isnan(value) else float(value)
    best: StudyScore = max(get_args(StudyScore), key=lambda m: (auc[m] or 0.0, m == "max"))
    return best, auc


def choose_findings_threshold(
    records_by_threshold: Mapping[float, Sequence[CaseRecord]],
) -> FindingsThresholdChoice:
    """The threshold whose findings give the best CPM on their cases; among equal CPMs the best
    study AUC, then the higher threshold (fewer, surer findings).

    The AUC matters because the study score is the best finding's score, and a study with no
    finding above the threshold scores 0: a high threshold ties every such study at 0 and
    throws away ranking that a lower one keeps.

    Raises:
        ValueError: no candidate threshold.
    """
    if not records_by_threshold:
        raise ValueError("no candidate findings threshold")
    cpm: dict[float, float] = {}
    auc: dict[float, float | None] = {}
    for threshold, records in records_by_threshold.items():
        cpm[threshold] = compute_froc([record.detections() for record in records]).cpm
        scores = np.array([study_score(record.findings) for record in records])
        labels = np.array([bool(record.lesions) for record in records])
        value = compute_roc_auc(scores, labels)
        auc[threshold] = None if np.isnan(value) else value

    def rank(threshold: float) -> tuple[float, float, float]:
        return (cpm[threshold], auc[threshold] or 0.0, threshold)

    return FindingsThresholdChoice(
        threshold=max(cpm, key=rank),
        cpm_by_threshold={f"{t:g}": value for t, value in sorted(cpm.items())},
        auc_by_threshold={f"{t:g}": value for t, value in sorted(auc.items())},
    )


def fit_bundle_calibration(
    records: Sequence[CaseRecord],
    method: CalibrationMethod,
    target_sensitivity: float,
    data: DataInfo,
    findings_threshold: FindingsThresholdChoice | None = None,
) -> BundleCalibration:
    """Fit both calibrators on uncalibrated ``records`` of ``data`` and pick the study
    operating point (``findings_threshold``: how the records' findings threshold was chosen,
    when it was).

    Raises:
        MissingClassError: the split lacks true or false findings, or lesion-free or lesion
            studies (a calibrator needs both outcomes).
    """
    scores, hits, _ = finding_outcomes(records)
    finding_calibrator = fit_calibrator(method, scores, hits)
    combine, auc_by_score = choose_study_score(records, finding_calibrator)
    study_scores = np.array(
        [study_score(calibrate_findings(r.findings, finding_calibrator), combine) for r in records]
    )
    has_lesion = np.array([bool(record.lesions) for record in records])
    study_calibrator = fit_calibrator(method, study_scores, has_lesion.astype(np.float64))
    point = operating_point_for_sensitivity(
        study_calibrator.apply(study_scores), has_lesion, target_sensitivity
    )
    specificity = point.specificity if np.isfinite(point.specificity) else None
    return BundleCalibration(
        method=method,
        findings=finding_calibrator,
        study=study_calibrator,
        operating_point=StoredOperatingPoint(
            threshold=point.threshold,
            target_sensitivity=point.target_sensitivity,
            sensitivity=point.sensitivity,
            specificity=specificity,
        ),
        fitted_on=FittedOn(
            data=data.path,
            split=data.split,
            data_sha256=data.sha256,
            n_cases=len(records),
            n_positive_cases=int(has_lesion.sum()),
            n_findings=int(hits.size),
            n_true_findings=int(hits.sum()),
        ),
        findings_threshold=findings_threshold,
        study_score=combine,
        study_auc_by_score=auc_by_score,
    )


def save_calibration(bundle_path: Path, calibration: BundleCalibration) -> Bundle:
    """Write ``calibration.json`` beside ``bundle_path`` and point the bundle at it.

    Only the bundle's top-level ``calibration`` (the file name) and ``operating_point`` (the
    study threshold) lines change, and ``findings.threshold`` when the calibration chose it, so
    the reference bundle keeps its comments (a bundle whose ``findings`` is written in flow
    style is rewritten whole instead); the result is validated and returned.
    """
    path = bundle_path.parent / CALIBRATION_FILE
    data = calibration.model_dump(mode="json")
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    original = bundle_path.read_text(encoding="utf-8")
    text = _set_top_level(original, "calibration", CALIBRATION_FILE)
    text = _set_top_level(text, "operating_point", calibration.operating_point.threshold)
    chosen = calibration.findings_threshold
    if chosen is None:
        bundle_path.write_text(text, encoding="utf-8")
        return load_bundle(bundle_path)
    text = _set_findings_threshold(text, chosen.threshold)
    try:
        edited: Bundle | None = Bundle.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError):
        edited = None
    if edited is not None and edited.findings.threshold == chosen.threshold:
        bundle_path.write_text(text, encoding="utf-8")
    else:
        before = Bundle.model_validate(yaml.safe_load(original))
        findings = before.findings.model_copy(update={"threshold": chosen.threshold})
        update = {
            "calibration": CALIBRATION_FILE,
            "operating_point": calibration.operating_point.threshold,
            "findings": findings,
        }
        write_bundle(before.model_copy(update=update), bundle_path)
    return load_bundle(bundle_path)


def _set_top_level(text: str, key: str, value: str | float) -> str:
    """``text`` (YAML) with the top-level scalar ``key`` set to ``value`` (appended if absent)."""
    line = yaml.safe_dump({key: value}, default_flow_style=False).strip()
    pattern = re.compile(rf"^{re.escape(key)}:[^\n]*$", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(lambda _: line, text, count=1)
    return text.rstrip("\n") + "\n" + line + "\n"


def _set_findings_threshold(text: str, threshold: float) -> str:
    """``text`` (YAML) with ``findings.threshold`` set (the ``findings`` block, or the key in it,
    added when absent)."""
    block = re.search(r"^findings:[^\n]*\n((?:[ \t]+[^\n]*\n|[ \t]*\n)*)", text, re.MULTILINE)
    if block is None:
        return text.rstrip("\n") + f"\nfindings:\n  threshold: {threshold}\n"
    body = block.group(1)
    line = re.compile(r"^([ \t]+)threshold:[^\n]*$", re.MULTILINE)
    if line.search(body):
        body = line.sub(lambda m: f"{m.group(1)}threshold: {threshold}", body, count=1)
    else:
        body = f"  threshold: {threshold}\n" + body
    return text[: block.start(1)] + body + text[block.end(1) :]
