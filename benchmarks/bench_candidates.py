"""Nodule candidates (stage 1 of issue 14): what they recall, at which budget, at what CPU cost.

Over every case of a prepared folder (``basira prepare``; all splits), each variant of
:func:`pipelines.candidates.find_candidates` runs on the cached image as inference would hold it.
A lesion counts as hit by a candidate whose centre lies within ``max(radius, 2 mm)`` of the
lesion's centre (its nominal radius; 2 mm for the smallest, so that a 3 mm nodule is not held to
a 1.5 mm sphere on a 1 x 1 x 1.5 mm grid), and a lesion is recalled at budget ``B`` when a hit
ranks ``B`` or better. Rows: recall at 25, 50, 100, 200 and 400 candidates a scan, over every
lesion, by size (the evaluation's bins, < 6 to >= 20 mm nominal diameter), by type and by
attachment (interior, juxta-vascular, juxta-pleural, as
:func:`pipelines.evaluation.report.lesion_location` reads the ground truth), and CPU seconds a
scan (``time.process_time``, one thread; wall seconds beside it). The variants run in turn on
each case, so load from other work on the machine hits each alike. The same-run baseline is the
same filter and scales without the lung mask (the whole volume filtered, every maximum a
candidate): ``x baseline`` is a variant's CPU time over its.
The other variants: the negative Laplacian instead of the dot filter (what the filter buys), and
the two options aimed at the weak groups (a grey-level opening for small nodules on vessels;
the chest wall blanked, with a wider closing, for juxta-pleural ones).

``python -m benchmarks candidates --data DIR`` prints the table of :data:`DEFAULT_VARIANTS`;
``python -m benchmarks.bench_candidates --data DIR --variants design,...`` picks variants (and
``--lesions-out FILE`` writes every lesion's best rank per variant). With
no ``--data`` a few small studies are rendered in memory (``--quick``: two tiny ones).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table
from pipelines.candidates import CandidateConfig, find_candidates
from pipelines.datasets.manifest import Lesion, LesionType
from pipelines.evaluation.report import LOCATIONS, lesion_location
from pipelines.evaluation.subgroups import bin_label, bin_labels
from pipelines.training.stage2 import SIZE_EDGES_MM

BUDGETS = (25, 50, 100, 200, 400)
MIN_HIT_RADIUS_MM = 2.0
BASELINE = "unmasked (baseline)"

_DESIGN = CandidateConfig(max_candidates=max(BUDGETS))

#: what each variant changes from the design (``pipelines.candidates.CandidateConfig``).
VARIANTS: dict[str, CandidateConfig] = {
    "design": _DESIGN,
    BASELINE: replace(_DESIGN, lung_mask=False),
    "LoG instead of dot": replace(_DESIGN, response="log"),
    "+ opening 1 mm": replace(_DESIGN, opening_mm=1.0),
    "+ opening + blank outside + closing 20 mm": replace(
        _DESIGN, opening_mm=1.0, blank_outside=True, closing_mm=20.0
    ),
}
DEFAULT_VARIANTS = tuple(VARIANTS)


@dataclass
class _Tally:
    """Per variant: each lesion's best hit rank (inf: missed) and the seconds each scan took."""

    ranks: list[float]
    cpu_s: list[float]
    wall_s: list[float]
    counts: list[int]


def _cases(data: Path | None, quick: bool) -> Iterator[dict[str, Any]]:
    """Prepared cases ``{"image", "affine_lps", "lesions"}``: from ``data``, or rendered."""
    if data is not None:
        from pipelines.datasets.prepare import load_prepared_case, read_prepared_index

        index = read_prepared_index(data)
        for case in index.cases:
            yield load_prepared_case(data / case.cache)
        return
    from pipelines.synth.config import SynthConfig
    from pipelines.synth.study import generate_study
    from pipelines.transforms import PreprocessConfig, preprocess_volume
    from pipelines.volume import Provenance, Volume

    config = SynthConfig(matrix_size=128, slice_count=(40, 60)) if quick else SynthConfig()
    for index in range(2 if quick else 6):
        study = generate_study(config, seed=14, index=index)
        volume = Volume(study.volume_hu, study.affine_lps, Provenance(source_format="synthetic"))
        prepared = preprocess_volume(volume, PreprocessConfig())
        yield {
            "image": prepared.array,
            "affine_lps": prepared.affine_lps,
            "lesions": [lesion.model_dump(mode="json") for lesion in study.lesions],
        }


def _best_ranks(centres_mm: np.ndarray, lesions: list[Lesion]) -> list[float]:
    """The rank (1-based) of the best candidate hitting each lesion; inf for none."""
    ranks = []
    for lesion in lesions:
        reach = max(lesion.diameter_mm / 2.0, MIN_HIT_RADIUS_MM)
        if len(centres_mm) == 0:
            ranks.append(math.inf)
            continue
        gap = np.linalg.norm(centres_mm - np.asarray(lesion.center_lps_mm), axis=1)
        hits = np.flatnonzero(gap <= reach)
        ranks.append(float(hits[0] + 1) if hits.size else math.inf)
    return ranks


def _groups(lesions: list[Lesion]) -> dict[str, np.ndarray]:
    """Row label → which lesions it counts, in table order."""
    sizes = [bin_label(lesion.diameter_mm, SIZE_EDGES_MM) for lesion in lesions]
    types = [str(lesion.type) for lesion in lesions]
    places = [lesion_location(lesion) for lesion in lesions]
    groups = {"all lesions": np.ones(len(lesions), bool)}
    for label in bin_labels(SIZE_EDGES_MM):
        groups[f"size {label}"] = np.array([s == label for s in sizes], bool)
    for kind in (t.value for t in LesionType if t is not LesionType.UNKNOWN):
        groups[f"type {kind}"] = np.array([t == kind for t in types], bool)
    for place in LOCATIONS:
        groups[f"location {place}"] = np.array([p == place for p in places], bool)
    return groups


def measure(
    data: Path | None, variants: tuple[str, ...], quick: bool = False
) -> tuple[list[Lesion], dict[str, _Tally]]:
    """Run every variant on every case; the lesions and each variant's tally."""
    tallies = {name: _Tally([], [], [], []) for name in variants}
    lesions: list[Lesion] = []
    for case in _cases(data, quick):
        case_lesions = [
            Lesion.model_validate({k: v for k, v in raw.items() if k in Lesion.model_fields})
            for raw in case["lesions"]
        ]
        lesions.extend(case_lesions)
        image, affine = case["image"], case["affine_lps"]
        for name in variants:
            cpu, wall = time.process_time(), time.perf_counter()
            found = find_candidates(image, affine, VARIANTS[name])
            tally = tallies[name]
            tally.cpu_s.append(time.process_time() - cpu)
            tally.wall_s.append(time.perf_counter() - wall)
            tally.counts.append(len(found))
            centres = np.array([c.center_lps_mm for c in found]).reshape(-1, 3)
            tally.ranks.extend(_best_ranks(centres, case_lesions))
    return lesions, tallies


def table(lesions: list[Lesion], tallies: dict[str, _Tally]) -> list[dict[str, Any]]:
    """The rows: per variant, recall at each budget per lesion group, then its cost."""
    groups = _groups(lesions)
    baseline_cpu = float(np.mean(tallies[BASELINE].cpu_s)) if BASELINE in tallies else None
    rows: list[dict[str, Any]] = []
    for name, tally in tallies.items():
        ranks = np.asarray(tally.ranks)
        cpu = float(np.mean(tally.cpu_s))
        for label, members in groups.items():
            row: dict[str, Any] = {"variant": name, "lesions": label, "n": int(members.sum())}
            for budget in BUDGETS:
                hit = ranks[members] <= budget
                row[f"recall @{budget}"] = float(hit.mean()) if hit.size else "-"
            if label == "all lesions":
                row["candidates/scan"] = float(np.mean(tally.counts))
                row["CPU s/scan"] = cpu
                row["wall s/scan"] = float(np.mean(tally.wall_s))
                row["x baseline"] = cpu / baseline_cpu if baseline_cpu else "-"
            rows.append(row)
    return rows


def run(
    quick: bool = False,
    data: Path | None = None,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    lesions_out: Path | None = None,
) -> list[dict[str, Any]]:
    """Measure and return the table rows (``data``: a prepared folder; see the module docstring).

    ``lesions_out``: also write every lesion with its best hit rank per variant (JSON), to look
    at the misses.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    lesions, tallies = measure(data, variants, quick)
    scans = len(next(iter(tallies.values())).cpu_s)
    print(f"{scans} scans, {len(lesions)} lesions; a hit lies within max(radius, 2 mm)")
    if lesions_out is not None:
        records = [
            {
                **lesion.model_dump(mode="json"),
                "location": lesion_location(lesion),
                "best_rank": {
                    name: None if math.isinf(tally.ranks[n]) else int(tally.ranks[n])
                    for name, tally in tallies.items()
                },
            }
            for n, lesion in enumerate(lesions)
        ]
        lesions_out.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return table(lesions, tallies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="a prepared folder (basira prepare)")
    parser.add_argument("--quick", action="store_true", help="two tiny rendered studies")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, of: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--lesions-out", type=Path, help="write each lesion's ranks (JSON)")
    args = parser.parse_args()
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    print_table(
        "Nodule candidates: recall by budget, CPU seconds a scan",
        run(quick=args.quick, data=args.data, variants=variants, lesions_out=args.lesions_out),
    )


if __name__ == "__main__":
    main()
