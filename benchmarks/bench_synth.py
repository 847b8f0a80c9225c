"""How fast the synthetic generator fills a dataset, against the cost of just writing the DICOM.

Figure: studies per minute for a typical 512 x 512 x 250 chest study, generated and written
(CT series, NIfTI label, SEG, lesions) by ``generate_dataset`` with 2 worker processes. Baseline
measured in the same run: ``write_ct_series`` alone writing a volume of the same size, the I/O
floor no generator can beat. ``python -m benchmarks.bench_synth`` prints the table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series
from pipelines.synth.config import SynthConfig
from pipelines.synth.dataset import generate_dataset

WORKERS = 2


def _config(quick: bool) -> SynthConfig:
    if quick:
        return SynthConfig(
            matrix_size=64,
            pixel_spacing_mm=(5.0, 6.0),
            slice_thickness_mm=(8.0, 12.0),
            slice_count=(24, 24),
            lesion_diameter_mm=(10.0, 30.0),
        )
    return SynthConfig(slice_count=(250, 250))


def _io_floor_s(config: SynthConfig, n_studies: int, root: Path) -> float:
    """Seconds per study to write a same-size series with write_ct_series (one process)."""
    size, n_slices = config.matrix_size, config.slice_count[0]
    rng = np.random.default_rng(0)
    volume = rng.normal(-500, 400, (n_slices, size, size)).astype(np.float32)
    affine = np.diag([0.75, 0.75, -1.25, 1.0])
    start = time.perf_counter()
    for i in range(n_studies):
        write_ct_series(volume, affine, root / f"floor{i}", CTSeriesInfo(uid_seed=f"floor{i}"))
    return (time.perf_counter() - start) / n_studies


def run(quick: bool = False) -> list[dict]:
    """Measure generator and I/O floor; one row per measurement plus their ratio."""
    config = _config(quick)
    n_studies = 2 if quick else 4
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate_dataset(config, root / "synth", n_studies=n_studies, seed=0, workers=WORKERS)
        wall_s = time.perf_counter() - start
        floor_s = _io_floor_s(config, n_studies, root)
    shape = f"{config.matrix_size}x{config.matrix_size}x{config.slice_count[0]}"
    generator_rate = 60.0 * n_studies / wall_s
    floor_rate = 60.0 * WORKERS / floor_s  # the floor with the same number of processes
    return [
        {
            "case": f"synth generate+write, {WORKERS} workers",
            "shape": shape,
            "studies": n_studies,
            "seconds": round(wall_s, 2),
            "studies_per_min": round(generator_rate, 2),
        },
        {
            "case": f"write_ct_series only (I/O floor, x{WORKERS} processes)",
            "shape": shape,
            "studies": n_studies,
            "seconds": round(floor_s * n_studies, 2),
            "studies_per_min": round(floor_rate, 2),
        },
        {
            "case": "generator / floor",
            "shape": shape,
            "studies": n_studies,
            "seconds": None,
            "studies_per_min": round(generator_rate / floor_rate, 3),
        },
    ]


def _print_table(rows: list[dict]) -> None:
    print(f"{'case':52} {'shape':14} {'n':>3} {'seconds':>8} {'studies/min':>12}")
    for row in rows:
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.2f}"
        print(
            f"{row['case']:52} {row['shape']:14} {row['studies']:>3} {seconds:>8} "
            f"{row['studies_per_min']:>12}"
        )


if __name__ == "__main__":
    import sys

    _print_table(run(quick="--quick" in sys.argv))
