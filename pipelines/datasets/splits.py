"""Train/validation/test splits by patient, stratified by whether the patient has a lesion.

Every case of a patient lands in the same split (no patient leaks between training and test).
Within each stratum (patients with at least one lesion, patients without), patients are ordered by
a hash of ``seed`` and their id, and the first ``round(n * test_fraction)`` go to test, the next
``round(n * val_fraction)`` to validation, the rest to training. So:

* the same manifest and seed always give the same split, on any machine (no RNG state);
* the fractions hold in each stratum up to rounding, even for small datasets;
* adding patients keeps the relative order of the existing ones, so at most one existing patient
  per boundary and stratum changes split; a patient's own hash never changes.
"""

from __future__ import annotations

import hashlib
import math

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


def patient_hash(seed: int, patient_id: str) -> float:
    """A uniform number in ``[0, 1)`` fixed by ``seed`` and ``patient_id`` alone."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(manifest: Manifest, config: SplitConfig) -> Manifest:
    """Return a copy of ``manifest`` with every case's ``split`` set (see module docstring)."""
    has_lesion: dict[str, bool] = {}
    for case in manifest.cases:
        has_lesion[case.patient_id] = has_lesion.get(case.patient_id, False) or case.has_lesion
    split_of: dict[str, Split] = {}
    for stratum in (True, False):
        patients = sorted(
            (p for p, lesion in has_lesion.items() if lesion is stratum),
            key=lambda p: (patient_hash(config.seed, p), p),
        )
        split_of.update(_split_ordered(patients, config))
    cases = [
        case.model_copy(update={"split": split_of[case.patient_id]}) for case in manifest.cases
    ]
    return manifest.model_copy(update={"cases": cases})


def _split_ordered(patients: list[str], config: SplitConfig) -> dict[str, Split]:
    n = len(patients)
    n_test = min(n, math.floor(n * config.test_fraction + 0.5))
    n_val = min(n - n_test, math.floor(n * config.val_fraction + 0.5))
    result: dict[str, Split] = {}
    for rank, patient in enumerate(patients):
        if rank < n_test:
            result[patient] = Split.TEST
        elif rank < n_test + n_val:
            result[patient] = Split.VAL
        else:
            result[patient] = Split.TRAIN
    return result
