"""Validation on the production path: whole volume → sliding window → findings → FROC.

The network being trained is wrapped in a :class:`~pipelines.engine.torch_engine.TorchEngine`
with the bundle's inference settings and every validation case goes through
:func:`pipelines.evaluation.inference.infer_case`, the path ``basira evaluate`` takes; the
records are scored with the LUNA16 FROC (CPM), the study-level ROC AUC (when both classes are
present) and the global Dice of the probability map at the findings threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.datasets.prepare import PreparedCase
from pipelines.engine.base import Engine
from pipelines.evaluation.classification import compute_roc_auc
from pipelines.evaluation.froc import compute_froc
from pipelines.evaluation.inference import LoadedCase, infer_case, load_case
from pipelines.evaluation.segmentation import compute_global_dice
from pipelines.findings import FindingsConfig


def load_validation_cases(data_dir: Path, cases: Sequence[PreparedCase]) -> list[LoadedCase]:
    """Read the cached validation volumes once (kept in their cached dtype to bound memory)."""
    return [load_case(data_dir, case) for case in cases]


def validate(
    engine: Engine, cases: Sequence[LoadedCase], findings: FindingsConfig
) -> dict[str, float]:
    """Detection and segmentation metrics of ``engine`` on ``cases``.

    Returns:
        ``cpm``, ``sens@<rate>`` for each LUNA16 false-positive rate, ``dice`` (global, at the
        findings threshold), ``findings_per_scan``, and ``auc`` when both study classes are
        present.
    """
    records = [infer_case(engine, case, findings) for case in cases]
    froc = compute_froc([record.detections() for record in records])
    counts = [record.dice_counts for record in records if record.dice_counts is not None]
    metrics = {"cpm": froc.cpm, "dice": compute_global_dice(counts)}
    metrics |= {f"sens@{rate:g}": value for rate, value in froc.sensitivities.items()}
    metrics["findings_per_scan"] = sum(len(r.findings) for r in records) / len(records)
    labels = np.array([bool(record.lesions) for record in records])
    if labels.any() and not labels.all():
        scores = np.array([record.study_probability for record in records])
        metrics["auc"] = compute_roc_auc(scores, labels)
    return metrics
