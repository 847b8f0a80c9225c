"""Patient splits: no leakage, stratified, deterministic, stable as patients are added."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.datasets.manifest import Case, ImageFormat, Lesion, Manifest, Split
from pipelines.datasets.splits import SplitConfig, assign_splits, patient_hash, split_by_hash

LESION = Lesion(id=1, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=5.0)


def _manifest(
    n_patients: int, *, lesion_every: int = 3, scans: int = 2, first: int = 0
) -> Manifest:
    """``scans`` cases per patient; every ``lesion_every``-th patient has a lesion in one scan."""
    cases = [
        Case(
            case_id=f"P{p:04d}_{s}",
            patient_id=f"P{p:04d}",
            image=f"P{p:04d}_{s}.nii.gz",
            image_format=ImageFormat.NIFTI,
            lesions=[LESION] if p % lesion_every == 0 and s == 0 else [],
            source="test",
        )
        for p in range(first, first + n_patients)
        for s in range(scans)
    ]
    return Manifest(name="t", source="test", cases=cases)


def _patient_splits(manifest: Manifest) -> dict[str, set[Split | None]]:
    found: dict[str, set[Split | None]] = {}
    for case in manifest.cases:
        found.setdefault(case.patient_id, set()).add(case.split)
    return found


def _split_and_stratum(manifest: Manifest) -> dict[str, tuple[Split | None, bool]]:
    lesion: dict[str, bool] = {}
    split: dict[str, Split | None] = {}
    for case in manifest.cases:
        lesion[case.patient_id] = lesion.get(case.patient_id, False) or case.has_lesion
        split[case.patient_id] = case.split
    return {p: (split[p], lesion[p]) for p in split}


def test_all_cases_of_a_patient_share_a_split() -> None:
    split = assign_splits(_manifest(200), SplitConfig(seed=3, val_fraction=0.2, test_fraction=0.2))
    assert all(len(splits) == 1 for splits in _patient_splits(split).values())
    assert all(case.split is not None for case in split.cases)


def test_adding_patients_never_moves_an_existing_one() -> None:
    config = SplitConfig(seed=7, val_fraction=0.2, test_fraction=0.1)
    before = _patient_splits(assign_splits(_manifest(300), config))
    grown = _manifest(300)
    grown = grown.model_copy(update={"cases": grown.cases + _manifest(500, first=300).cases})
    after = _patient_splits(assign_splits(grown, config))
    assert {p: after[p] for p in before} == before


def test_a_patient_split_depends_only_on_seed_id_and_stratum() -> None:
    config = SplitConfig(seed=4)
    alone = assign_splits(_manifest(1000), config)
    evens = [c for c in _manifest(1000).cases if int(c.patient_id[1:]) % 2 == 0]
    subset = assign_splits(Manifest(name="t", source="test", cases=evens), config)
    full = {c.case_id: c.split for c in alone.cases}
    assert all(full[c.case_id] == c.split for c in subset.cases)


def test_fractions_are_honoured_in_each_stratum_on_1000_patients() -> None:
    config = SplitConfig(seed=5, val_fraction=0.2, test_fraction=0.1)
    per_patient = _split_and_stratum(assign_splits(_manifest(1000), config))
    for stratum in (True, False):
        members = [s for s, lesion in per_patient.values() if lesion is stratum]
        n = len(members)  # 334 with a lesion, 666 without: 4 standard deviations below
        assert members.count(Split.TEST) / n == pytest.approx(0.1, abs=0.07)
        assert members.count(Split.VAL) / n == pytest.approx(0.2, abs=0.09)


@pytest.mark.parametrize("seed", range(5))
def test_both_strata_are_in_every_split_for_a_realistic_size(seed: int) -> None:
    config = SplitConfig(seed=seed)
    per_patient = _split_and_stratum(assign_splits(_manifest(200, lesion_every=2), config))
    assert set(per_patient.values()) == {(s, lesion) for s in Split for lesion in (True, False)}


def test_same_seed_same_split_other_seed_other_split() -> None:
    config = SplitConfig(seed=11)
    first = assign_splits(_manifest(100), config)
    again = assign_splits(_manifest(100), config)
    other = assign_splits(_manifest(100), SplitConfig(seed=12))
    assert [c.split for c in first.cases] == [c.split for c in again.cases]
    assert [c.split for c in first.cases] != [c.split for c in other.cases]


def test_split_ignores_case_order() -> None:
    manifest = _manifest(60)
    shuffled = manifest.model_copy(update={"cases": list(reversed(manifest.cases))})
    config = SplitConfig(seed=2)
    a = {c.case_id: c.split for c in assign_splits(manifest, config).cases}
    b = {c.case_id: c.split for c in assign_splits(shuffled, config).cases}
    assert a == b


@pytest.mark.parametrize("n_patients", [3, 4, 5, 8, 12])
@pytest.mark.parametrize("seed", range(20))
def test_tiny_dataset_fills_every_split_deterministically(n_patients: int, seed: int) -> None:
    config = SplitConfig(seed=seed, val_fraction=0.15, test_fraction=0.15)
    first = assign_splits(_manifest(n_patients, scans=1), config)
    again = assign_splits(_manifest(n_patients, scans=1), config)
    assert {c.split for c in first.cases} == set(Split)
    assert [c.split for c in first.cases] == [c.split for c in again.cases]


def test_zero_fraction_split_stays_empty_and_two_patients_fill_the_rest() -> None:
    config = SplitConfig(seed=0, val_fraction=0.5, test_fraction=0.0)
    for seed in range(20):
        manifest = assign_splits(_manifest(2, scans=1), config.model_copy(update={"seed": seed}))
        assert sorted(str(c.split) for c in manifest.cases) == ["train", "val"]


def test_fewer_patients_than_splits_keep_their_hash_split() -> None:
    config = SplitConfig(seed=1, val_fraction=0.3, test_fraction=0.3)
    (case,) = assign_splits(_manifest(1, scans=1), config).cases
    assert case.split == split_by_hash(patient_hash(1, case.patient_id), config)


def test_fractions_leaving_no_training_are_refused() -> None:
    with pytest.raises(ValidationError):
        SplitConfig(val_fraction=0.5, test_fraction=0.5)
