"""Train/validation/test splits by patient, stable as a dataset grows.

Every case of a patient lands in the same split (no patient leaks between training and test).
A patient's split is read off its own hash ``u = patient_hash(seed, patient_id)``, uniform in
``[0, 1)``, against the cumulative fractions: ``u < test_fraction`` goes to test,
``u < test_fraction + val_fraction`` to validation, the rest to training. So:

* the same manifest and seed always give the same split, on any machine (no RNG state), whatever
  the case order;
* adding patients (a new dataset version) never moves an existing patient: its split depends on
  the seed and its id alone, and on its stratum (whether any of its studies has a lesion) only
  through the repair below;
* stratification by lesion holds in expectation: the thresholds are the same in both strata, so
  each stratum is split in the requested fractions up to sampling noise (about
  ``sqrt(f (1 - f) / n)`` for a stratum of ``n`` patients), not exactly by rounding.

Tiny datasets: the threshold rule can leave a split empty (for a fraction ``f`` and ``n``
patients with probability ``(1 - f) ** n``, under 1 % from about 30 patients at ``f = 0.15``).
Then, as long as there are at least as many patients as splits to fill, the empty split
(training, then validation, then test; a split whose fraction is 0 stays empty) takes one patient
from the largest split: from the donor's stratum with the most patients, the one whose hash lies
nearest the empty split's interval (ties by id). The repair is deterministic, but a repaired
patient is the one exception to stability: once the split fills by the rule, it returns to its
own split. With fewer patients than splits to fill, every patient keeps its hash split.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.datasets.manifest import Manifest, Split


class SplitConfig(BaseModel):
    """How a manifest is split; ``params.yaml`` section ``prepare.split``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    val_fraction: float = Field(default=0.15, ge=0, lt=1)
    test_fraction: float = Field(default=0.15, ge=0, lt=1)

    @model_validator(mode="after")
    def _leave_training(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave cases for training (< 1)")
        return self

    def intervals(self) -> dict[Split, tuple[float, float]]:
        """The hash interval ``[low, high)`` of each split."""
        test, val = self.test_fraction, self.val_fraction
        return {
            Split.TEST: (0.0, test),
            Split.VAL: (test, test + val),
            Split.TRAIN: (test + val, 1.0),
        }


def patient_hash(seed: int, patient_id: str) -> float:
    """A uniform number in ``[0, 1)`` fixed by ``seed`` and ``patient_id`` alone."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(u: float, config: SplitConfig) -> Split:
    """The split whose interval holds the patient hash ``u``."""
    if u < config.test_fraction:
        return Split.TEST
    if u < config.test_fraction + config.val_fraction:
        return Split.VAL
    return Split.TRAIN


def assign_splits(manifest: Manifest, config: SplitConfig) -> Manifest:
    """Return a copy of ``manifest`` with every case's ``split`` set (see module docstring)."""
    has_lesion: dict[str, bool] = {}
    for case in manifest.cases:
        has_lesion[case.patient_id] = has_lesion.get(case.patient_id, False) or case.has_lesion
    hashes = {p: patient_hash(config.seed, p) for p in has_lesion}
    split_of = {p: split_by_hash(u, config) for p, u in hashes.items()}
    _fill_empty_splits(split_of, hashes, has_lesion, config)
    cases = [
        case.model_copy(update={"split": split_of[case.patient_id]}) for case in manifest.cases
    ]
    return manifest.model_copy(update={"cases": cases})


def _fill_empty_splits(
    split_of: dict[str, Split],
    hashes: dict[str, float],
    has_lesion: dict[str, bool],
    config: SplitConfig,
) -> None:
    """Give each empty split with a positive fraction one patient, in place (tiny datasets)."""
    intervals = config.intervals()
    wanted = [s for s in (Split.TRAIN, Split.VAL, Split.TEST) if intervals[s][1] > intervals[s][0]]
    if len(split_of) < len(wanted):
        return
    for empty in wanted:
        members = {s: sorted(p for p, t in split_of.items() if t is s) for s in Split}
        if members[empty]:
            continue
        donor = max(wanted, key=lambda s: (len(members[s]), -wanted.index(s)))
        strata = [[p for p in members[donor] if has_lesion[p] is flag] for flag in (True, False)]
        pool = max(strata, key=len)
        low, high = intervals[empty]
        split_of[min(pool, key=lambda p: (_gap(hashes[p], low, high), p))] = empty


def _gap(u: float, low: float, high: float) -> float:
    """How far ``u`` lies outside ``[low, high)``."""
    return max(low - u, u - high, 0.0)
