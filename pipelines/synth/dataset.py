"""Generate a whole synthetic dataset with worker processes, and its manifest.

Workers only change the wall time: study ``i`` is a pure function of ``(config, seed, i)`` and
the manifest lists cases in index order whatever order they finish in.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipelines.datasets.manifest import Case, Manifest, write_manifest
from pipelines.errors import ConfigError
from pipelines.synth.config import SynthConfig
from pipelines.synth.preview import write_preview
from pipelines.synth.study import generate_study
from pipelines.synth.writer import write_study

MANIFEST_NAME = "manifest.json"


def build_case(config: SynthConfig, seed: int, index: int, out_dir: Path, preview: bool) -> Case:
    """Generate, write (and optionally preview) study ``index``; returns its manifest entry."""
    study = generate_study(config, seed, index)
    case_dir = out_dir / study.case_id
    case = write_study(study, case_dir, transfer_syntax=config.transfer_syntax)
    if preview:
        write_preview(study, case_dir / "preview.png")
    return case


def generate_dataset(
    config: SynthConfig,
    out_dir: Path,
    *,
    n_studies: int,
    seed: int,
    workers: int = 2,
    preview: bool = False,
    on_done: Callable[[Case], None] | None = None,
) -> Manifest:
    """Write ``n_studies`` studies under ``out_dir`` and ``out_dir/manifest.json``.

    Raises:
        ConfigError: ``n_studies`` is negative or ``workers`` below 1.
    """
    if n_studies < 0 or workers < 1:
        raise ConfigError(
            "The number of studies must be >= 0 and of workers >= 1.",
            n_studies=n_studies,
            workers=workers,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    cases: dict[int, Case] = {}
    if workers == 1 or n_studies <= 1:
        for index in range(n_studies):
            cases[index] = build_case(config, seed, index, out_dir, preview)
            if on_done:
                on_done(cases[index])
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(build_case, config, seed, index, out_dir, preview): index
                for index in range(n_studies)
            }
            for future, index in futures.items():
                cases[index] = future.result()
                if on_done:
                    on_done(cases[index])
    manifest = Manifest(
        name=f"synthetic-chest-ct-seed{seed}",
        source="synthetic",
        cases=[cases[i] for i in range(n_studies)],
    )
    write_manifest(manifest, out_dir / MANIFEST_NAME)
    return manifest
