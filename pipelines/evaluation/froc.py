"""FROC and CPM as the LUNA16 challenge defines them.

Matching, per scan: a prediction *hits* a lesion when its centre lies within the lesion's radius
(Euclidean distance in LPS mm ≤ ``diameter_mm / 2``). A lesion hit by several predictions is
detected once, with the highest of their scores; those predictions are never false positives,
even the redundant ones (LUNA16 ignores them). Every prediction hitting no lesion is a false
positive. Scans without lesions still count in the false-positives-per-scan denominator.

The FROC curve has one point per distinct score threshold ``t`` (plus the origin): false
positives with score ≥ t per scan, against detected lesions with score ≥ t over all lesions.
Sensitivities at the operating rates are read off it by linear interpolation
(:func:`numpy.interp`, as LUNA16's ``noduleCADEvaluationLUNA16.py`` does; past the curve's last
point the sensitivity stays at its final value). CPM is their mean.

Every computation accepts per-case weights (how many times each case was drawn), so that the
bootstrap in :mod:`pipelines.evaluation.bootstrap` reuses exactly this code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: False positives per scan at which LUNA16 reads the sensitivity (CPM averages these seven).
FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class CaseDetections:
    """Ground truth and predictions of one scan, in patient LPS millimetres.

    Arrays: ``lesion_centers_lps_mm`` ``[n, 3]``, ``lesion_diameters_mm`` ``[n]``,
    ``pred_centers_lps_mm`` ``[m, 3]``, ``pred_scores`` ``[m]`` (n or m may be 0).
    """

    case_id: str
    lesion_centers_lps_mm: np.ndarray
    lesion_diameters_mm: np.ndarray
    pred_centers_lps_mm: np.ndarray
    pred_scores: np.ndarray


@dataclass(frozen=True)
class FrocResult:
    """FROC summary: sensitivity at each FP rate, CPM, and the curve itself.

    ``fps_per_scan`` and ``sensitivity_curve`` are ``[p]`` arrays starting at the origin, ordered
    by decreasing score threshold. Sensitivities and CPM are NaN when there are no lesions.
    """

    sensitivities: dict[float, float]
    cpm: float
    fps_per_scan: np.ndarray
    sensitivity_curve: np.ndarray
    n_lesions: int
    n_scans: int


@dataclass(frozen=True)
class FrocEntries:
    """The scored events of a set of scans, after matching.

    ``scores`` ``[e]``: the best score of each detected lesion and the score of each false
    positive; ``is_hit`` ``[e]``: True for detected lesions; ``case_index`` ``[e]``: which scan
    each entry belongs to; ``lesions_per_case`` ``[c]``: lesions counted in each scan (detected
    or not).
    """

    scores: np.ndarray
    is_hit: np.ndarray
    case_index: np.ndarray
    lesions_per_case: np.ndarray


def match_case(
    case: CaseDetections, lesion_included: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Match one scan's predictions to its lesions.

    Args:
        case: one scan.
        lesion_included: ``[n]`` bool; lesions outside it are *ignored*: they count neither as
            lesions nor make the predictions hitting them false positives (how a subgroup is
            scored). All lesions by default.

    Returns:
        ``best_scores`` ``[n]``: per lesion, the highest score of the predictions hitting it
        (``-inf`` when missed), and ``is_fp`` ``[m]``: predictions that hit no lesion at all.
    """
    lesions = np.asarray(case.lesion_centers_lps_mm, dtype=np.float64).reshape(-1, 3)
    radii = np.asarray(case.lesion_diameters_mm, dtype=np.float64).reshape(-1) / 2.0
    preds = np.asarray(case.pred_centers_lps_mm, dtype=np.float64).reshape(-1, 3)
    scores = np.asarray(case.pred_scores, dtype=np.float64).reshape(-1)
    if lesions.shape[0] != radii.shape[0] or preds.shape[0] != scores.shape[0]:
        raise ValueError(f"case {case.case_id!r}: centre and diameter/score counts differ")
    distance = np.linalg.norm(lesions[:, None, :] - preds[None, :, :], axis=2)
    hits = distance <= radii[:, None]
    best_scores = np.where(hits, scores[None, :], -np.inf).max(axis=1, initial=-np.inf)
    is_fp = ~hits.any(axis=0)
    if lesion_included is not None:
        best_scores = best_scores[np.asarray(lesion_included, dtype=bool)]
    return best_scores, is_fp


def collect_froc_entries(
    cases: Sequence[CaseDetections], lesion_included: Sequence[np.ndarray] | None = None
) -> FrocEntries:
    """Match every scan and pool the scored events (see :func:`match_case`)."""
    scores: list[np.ndarray] = []
    is_hit: list[np.ndarray] = []
    case_index: list[np.ndarray] = []
    lesions_per_case = np.zeros(len(cases), dtype=np.int64)
    for index, case in enumerate(cases):
        included = None if lesion_included is None else lesion_included[index]
        best_scores, is_fp = match_case(case, included)
        detected = best_scores[np.isfinite(best_scores)]
        fp_scores = np.asarray(case.pred_scores, dtype=np.float64).reshape(-1)[is_fp]
        scores.extend((detected, fp_scores))
        is_hit.extend((np.ones(detected.size, bool), np.zeros(fp_scores.size, bool)))
        case_index.append(np.full(detected.size + fp_scores.size, index))
        lesions_per_case[index] = best_scores.size
    return FrocEntries(
        scores=np.concatenate(scores) if scores else np.zeros(0),
        is_hit=np.concatenate(is_hit) if is_hit else np.zeros(0, bool),
        case_index=np.concatenate(case_index) if case_index else np.zeros(0, np.int64),
        lesions_per_case=lesions_per_case,
    )


def compute_froc_curves(
    entries: FrocEntries, case_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """FROC curves for ``r`` weightings of the scans at once.

    Args:
        entries: the pooled events of ``c`` scans.
        case_weights: ``[r, c]`` how many times each scan counts (all ones: the plain curve).

    Returns:
        ``fps_per_scan`` and ``sensitivity``, each ``[r, p]``: one point per distinct score plus
        the origin, thresholds decreasing. NaN where a weighting holds no lesion (sensitivity) or
        no scan (FP rate), as a bootstrap resample of a subgroup can.
    """
    weights = np.atleast_2d(np.asarray(case_weights, dtype=np.float64))
    order = np.argsort(-entries.scores, kind="stable")
    sorted_scores = entries.scores[order]
    entry_weights = weights[:, entries.case_index[order]]
    hit = entries.is_hit[order]
    cum_tp = np.cumsum(entry_weights * hit, axis=1)
    cum_fp = np.cumsum(entry_weights * ~hit, axis=1)
    # One point per distinct threshold: the last entry of each run of equal scores.
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True][: sorted_scores.size]
    zeros = np.zeros((weights.shape[0], 1))
    cum_tp = np.hstack([zeros, cum_tp[:, last_of_run]])
    cum_fp = np.hstack([zeros, cum_fp[:, last_of_run]])
    n_lesions = weights @ entries.lesions_per_case
    n_scans = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cum_fp / n_scans[:, None], cum_tp / n_lesions[:, None]


def sensitivities_at(
    fps_per_scan: np.ndarray, sensitivity: np.ndarray, fp_rates: Sequence[float]
) -> np.ndarray:
    """LUNA16 interpolation of ``[r, p]`` curves at the FP rates: ``[r, len(fp_rates)]``."""
    fps = np.atleast_2d(fps_per_scan)
    sens = np.atleast_2d(sensitivity)
    rates = np.asarray(fp_rates, dtype=np.float64)
    out = np.empty((fps.shape[0], rates.size))
    for row, (x, y) in enumerate(zip(fps, sens, strict=True)):
        out[row] = np.interp(rates, x, y)
    return out


def compute_froc(
    cases: Sequence[CaseDetections], fp_rates: Sequence[float] = FP_RATES
) -> FrocResult:
    """FROC curve, sensitivity at each FP-per-scan rate and CPM (their mean), LUNA16 rules."""
    if not cases:
        raise ValueError("compute_froc needs at least one case")
    entries = collect_froc_entries(cases)
    fps, sens = compute_froc_curves(entries, np.ones((1, len(cases))))
    at_rates = sensitivities_at(fps, sens, fp_rates)[0]
    return FrocResult(
        sensitivities={float(r): float(s) for r, s in zip(fp_rates, at_rates, strict=True)},
        cpm=float(at_rates.mean()),
        fps_per_scan=fps[0],
        sensitivity_curve=sens[0],
        n_lesions=int(entries.lesions_per_case.sum()),
        n_scans=len(cases),
    )
