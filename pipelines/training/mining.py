"""Hard negatives mined from the model being trained: the places it is most sure of and wrong.

Drawn by rule (soft tissue touching lung air), hard negatives teach what vessels in general look
like; the false positives that survive are the particular branchings, hila and pleural bumps the
current model calls nodules. Every ``training.mine_every`` epochs the model runs over the training
cases on the production path (whole volume, sliding window, findings at ``mine_threshold``); each
case's ``mine_per_case`` highest-scoring findings that hit no lesion become patch centres, and a
``mined_fraction`` share of the background patches is centred on them until the next round. The
round's centres are kept in the checkpoint, so a resumed run draws the same patches.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipelines.engine.base import Engine
from pipelines.evaluation.inference import LoadedCase
from pipelines.findings import FindingsConfig, extract_findings

#: the key of a training item holding its case's mined centres, ``[n, 3]`` (k, j, i) voxels
MINED_KEY = "mined_kji"


def false_positive_centres(
    prob_kji: np.ndarray, case: LoadedCase, config: FindingsConfig
) -> np.ndarray:
    """``[n, 3]`` (k, j, i) voxel centres of the best-scoring findings of ``prob_kji`` that hit no
    lesion of ``case`` (neither within a lesion's radius of its centre, LUNA16's rule, nor on a
    lesion voxel), best first."""
    found = extract_findings(prob_kji, case.affine_lps, config)
    centres = []
    lesions = [(np.asarray(les.center_lps_mm), les.diameter_mm / 2) for les in case.lesions]
    for finding in found:
        lps = np.asarray(finding.center_lps_mm)
        if any(np.linalg.norm(lps - centre) <= radius for centre, radius in lesions):
            continue
        kji = np.clip(
            np.rint(finding.center_ijk[::-1]).astype(int), 0, np.asarray(prob_kji.shape) - 1
        )
        if case.label_kji[tuple(kji)]:
            continue
        centres.append(kji)
    return np.asarray(centres, dtype=np.int64).reshape(-1, 3)


def mine(
    engine: Engine, cases: Iterable[tuple[int, LoadedCase]], config: FindingsConfig
) -> dict[int, np.ndarray]:
    """Per training case index, the false-positive centres of ``engine`` on that case (cases
    without any are left out)."""
    mined = {}
    for index, case in cases:
        centres = false_positive_centres(engine.predict(case.image_kji), case, config)
        if len(centres):
            mined[index] = centres
    return mined
