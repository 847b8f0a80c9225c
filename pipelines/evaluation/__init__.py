"""Evaluation as pure functions: FROC/CPM, study-level ROC, Dice, calibration, bootstrap CIs.

``evaluate_cases`` ties them together into one ``metrics.json``; see ``docs/evaluation.md``.

The names below are imported on first use (PEP 562), so the ``basira`` commands that live in
this package do not load scipy and scikit-learn just to show ``--help``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.evaluation.bootstrap import (
        ConfidenceInterval,
        bootstrap_case_weights,
        bootstrap_ci,
        bootstrap_cis,
    )
    from pipelines.evaluation.calibration import (
        CalibrationMethod,
        Calibrator,
        IsotonicCalibrator,
        TemperatureCalibrator,
        calibrator_from_dict,
        compute_brier,
        compute_ece,
        compute_reliability,
        fit_calibrator,
        fit_isotonic,
        fit_temperature,
    )
    from pipelines.evaluation.classification import (
        OperatingPoint,
        compute_roc_auc,
        compute_roc_curve,
        compute_sensitivity_specificity,
        operating_point_for_sensitivity,
    )
    from pipelines.evaluation.froc import FP_RATES, CaseDetections, FrocResult, compute_froc
    from pipelines.evaluation.report import (
        CaseRecord,
        EvaluationConfig,
        evaluate_cases,
        finding_outcomes,
        write_metrics,
    )
    from pipelines.evaluation.segmentation import (
        DiceCounts,
        compute_dice_counts,
        compute_global_dice,
        compute_mean_dice,
    )

_SUBMODULES = ("bootstrap", "calibration", "classification", "froc", "report", "segmentation")


def __getattr__(name: str) -> Any:
    """Import an exported name from the submodule that defines it, on first access."""
    if name in __all__:
        for submodule in _SUBMODULES:
            module = importlib.import_module(f"{__name__}.{submodule}")
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FP_RATES",
    "CalibrationMethod",
    "Calibrator",
    "CaseDetections",
    "CaseRecord",
    "ConfidenceInterval",
    "DiceCounts",
    "EvaluationConfig",
    "FrocResult",
    "IsotonicCalibrator",
    "OperatingPoint",
    "TemperatureCalibrator",
    "bootstrap_case_weights",
    "bootstrap_ci",
    "bootstrap_cis",
    "calibrator_from_dict",
    "compute_brier",
    "compute_dice_counts",
    "compute_ece",
    "compute_froc",
    "compute_global_dice",
    "compute_mean_dice",
    "compute_reliability",
    "compute_roc_auc",
    "compute_roc_curve",
    "compute_sensitivity_specificity",
    "evaluate_cases",
    "finding_outcomes",
    "fit_calibrator",
    "fit_isotonic",
    "fit_temperature",
    "operating_point_for_sensitivity",
    "write_metrics",
]
