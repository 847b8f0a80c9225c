"""Evaluation as pure functions: FROC/CPM, study-level ROC, Dice, calibration, bootstrap CIs."""

from pipelines.evaluation.froc import FP_RATES, CaseDetections, FrocResult, compute_froc

__all__ = ["FP_RATES", "CaseDetections", "FrocResult", "compute_froc"]
