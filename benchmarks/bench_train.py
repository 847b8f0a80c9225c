"""Training throughput on CPU for the shipped bundle (``models/lung-nodule-unet``) and stage 2.

A train step as ``pipelines.training.loop`` runs it (forward, the bundle's loss, backward,
AdamW step) on ``batch_size x patches_per_case`` random patches of the bundle's patch size,
against the baseline of a forward-only inference pass of the same network on the same patches in
the same run. From the train step: the time of one epoch of ``N_CASES`` training cases (network
time only; loading cached patches and augmentation are left out). And the sliding-window
inference of one typical preprocessed volume (250 x 250 x 200 voxels at 1 x 1 x 1.5 mm) through
the torch engine with the bundle's inference settings: what validation pays per volume.
``x forward`` is seconds per patch (per window, for the sliding window: blending and overlap
bookkeeping included) over the forward baseline's seconds per patch.

The data loader's side, on one study the synthetic generator renders in memory and the shared
preprocessing prepares as ``basira prepare`` would: the bundle's training transform cutting one
case's patches with lesion insertion, against the same transform without it (the baseline), and
the distinct lesions a training hour inserts: lesions per patch times the patches a second of a
step whose loader and train step share the CPU.

Stage 2 of the two-stage detector (``basira stage2 train``) on the same study: the candidate
classifier's train step on one batch of two-scale patches against its own forward pass (the
baseline of those rows), the sampler drawing a batch (real lesions, lesions inserted beside
stage-1 candidates, negatives), and the distinct lesions an hour of step plus sampler inserts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from torch import nn

from benchmarks.common import median_seconds, print_table
from pipelines.bundle import Bundle, load_bundle
from pipelines.engine.torch_engine import TorchEngine
from pipelines.networks import build_network
from pipelines.training.data import build_train_transform
from pipelines.training.insertion import INSERTED_KEY, THICKNESS_KEY
from pipelines.training.losses import build_loss
from pipelines.training.stage2 import Stage2Config

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "lung-nodule-unet" / "bundle.yaml"
N_CASES = 100  # the bundle's time budget: about 100 training studies
VOLUME_KJI = (200, 250, 250)  # a preprocessed chest CT: 300 x 250 x 250 mm
QUICK_PATCH = 32  # a multiple of the UNet's down-sampling (16)
QUICK_VOLUME_KJI = (32, 48, 48)


def _window_count(volume_kji: tuple[int, ...], bundle: Bundle) -> int:
    """How many windows MONAI's sliding window cuts ``volume_kji`` into (same interval rule)."""
    roi, overlap = bundle.inference.roi_size_kji, bundle.inference.overlap
    interval = [
        r if r == size else max(int(r * (1 - overlap)), 1)
        for r, size in zip(roi, volume_kji, strict=True)
    ]
    return len(dense_patch_slices(volume_kji, roi, interval))


def _interleaved_medians(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median seconds of each of ``fns``, timed in turn within every repeat (after one warm-up
    round), so that load from other work on the machine hits the baseline and the measure alike."""
    times: list[list[float]] = [[] for _ in fns]
    for round_number in range(repeats + 1):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            if round_number:
                spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def _quick(bundle: Bundle) -> Bundle:
    """The bundle with tiny patches and windows (same network), for a smoke run."""
    size = (QUICK_PATCH,) * 3
    inference = bundle.inference.model_copy(update={"roi_size_kji": size})
    return bundle.model_copy(update={"patch_size_kji": size, "inference": inference})


def _forward_and_step(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A forward-only inference pass of ``network`` on ``images`` (the baseline) and one train
    step on them (forward, loss, backward, optimiser step), to be timed side by side."""

    def forward() -> None:
        network.eval()
        with torch.inference_mode():
            network(images)

    def train_step() -> None:
        network.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(network(images), labels).backward()
        optimizer.step()

    return forward, train_step


def _train_step_timings(bundle: Bundle, network: nn.Module, repeats: int) -> tuple[float, float]:
    """Median seconds of a forward-only pass and of a train step, on one step's patches.

    The step is the training loop's: ``batch_size x patches_per_case`` patches of the bundle's
    size, its loss, AdamW with its learning rate (labels: 1 % lesion voxels).
    """
    training = bundle.training
    n_patches = training.batch_size * training.patches_per_case
    images = torch.rand(n_patches, 1, *bundle.patch_size_kji)
    labels = (torch.rand(n_patches, 1, *bundle.patch_size_kji) > 0.99).float()
    loss_fn = build_loss(training.loss)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=training.lr, weight_decay=training.weight_decay
    )

    forward_s, step_s = _interleaved_medians(
        list(_forward_and_step(network, images, labels, loss_fn, optimizer)), repeats
    )
    return forward_s, step_s


def _prepared_case(quick: bool) -> dict[str, Any]:
    """One synthetic study rendered in memory and preprocessed as ``basira prepare`` does:
    ``image`` and ``label`` ``[k, j, i]``, ``affine_lps``, ``lesions`` (with ``center_ijk`` on
    the prepared grid) and the source slice thickness, as the prepared cache holds them."""
    from pipelines.synth.config import SynthConfig
    from pipelines.synth.study import generate_study
    from pipelines.transforms import PreprocessConfig, preprocess_label, preprocess_volume
    from pipelines.volume import Provenance, Volume

    config = SynthConfig(matrix_size=128, slice_count=(40, 60)) if quick else SynthConfig()
    study = generate_study(config, seed=0, index=1)  # it holds lesions: stage 2 draws them
    volume = Volume(study.volume_hu, study.affine_lps, Provenance(source_format="synthetic"))
    prepared = preprocess_volume(volume, PreprocessConfig())
    geometry = prepared.geometry
    return {
        "image": prepared.array.astype(np.float32),
        "label": preprocess_label(study.label, geometry),
        "affine_lps": geometry.affine_lps,
        "lesions": [
            {
                **lesion.model_dump(mode="json"),
                "center_ijk": list(geometry.lps_to_output_ijk(np.asarray(lesion.center_lps_mm))),
            }
            for lesion in study.lesions
        ],
        THICKNESS_KEY: study.protocol.slice_thickness_mm,
    }


def _loader_timings(
    bundle: Bundle, prepared: dict[str, Any], repeats: int
) -> tuple[float, float, float]:
    """Median seconds to cut one case's patches without and with insertion, and the lesions
    inserted per patch (mean over every timed call)."""
    case = {
        "image": prepared["image"][None],
        "label": prepared["label"][None].astype(np.float32),
        THICKNESS_KEY: prepared[THICKNESS_KEY],
    }
    augmentation = bundle.augmentation
    off = augmentation.model_copy(
        update={"insertion": augmentation.insertion.model_copy(update={"probability": 0.0})}
    )
    plain = build_train_transform(bundle.model_copy(update={"augmentation": off}))
    inserting = build_train_transform(bundle)
    counts: list[int] = []
    seeds = iter(range(10_000))

    def cut(transform: Any, count: bool) -> None:
        transform.set_random_state(seed=next(seeds))
        patches = transform(dict(case))
        if count:
            counts.extend(int(patch[INSERTED_KEY]) for patch in patches)

    plain_s, inserting_s = _interleaved_medians(
        [lambda: cut(plain, False), lambda: cut(inserting, True)], repeats * 4
    )
    return plain_s, inserting_s, float(np.mean(counts))


def _stage2_timings(prepared: dict[str, Any], repeats: int) -> tuple[float, float, float, float]:
    """Stage 2 of the two-stage detector (``pipelines.training.stage2``) on the same study: median
    seconds of the classifier's forward pass and of its train step on one batch, of the sampler
    drawing one batch (real, inserted and negative patches around the study's stage-1
    candidates), and the lesions the sampler inserts a batch."""
    from pipelines.candidates import CandidateConfig, find_candidates
    from pipelines.training.stage2 import (
        CandidateClassifier,
        Stage2Config,
        Stage2Sampler,
        stage2_case,
    )
    from pipelines.transforms import PreprocessConfig

    config = Stage2Config()
    found = find_candidates(
        prepared["image"],
        prepared["affine_lps"],
        CandidateConfig(max_candidates=config.negative_budget),
    )
    case = stage2_case(
        "benchmark",
        prepared,
        [candidate.to_dict() for candidate in found],
        config.patch,
        config.negative_budget,
        prepared[THICKNESS_KEY],
    )
    sampler = Stage2Sampler([case], config, PreprocessConfig(), np.random.default_rng(0))
    patches, labels, _ = sampler.batch()
    images, targets = torch.from_numpy(patches), torch.from_numpy(labels)
    model = CandidateClassifier(config.channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()

    forward, train_step = _forward_and_step(model, images, targets, loss_fn, optimizer)
    drawn = [0, sampler.inserted]

    def draw() -> None:
        sampler.batch()
        drawn[0] += 1

    forward_s, step_s, draw_s = _interleaved_medians([forward, train_step, draw], repeats)
    return forward_s, step_s, draw_s, (sampler.inserted - drawn[1]) / drawn[0]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick``: 32^3 patches, a 48 x 48 x 32 volume)."""
    bundle = load_bundle(BUNDLE)
    if quick:
        bundle = _quick(bundle)
    volume_kji = QUICK_VOLUME_KJI if quick else VOLUME_KJI
    repeats = 2 if quick else 5
    training = bundle.training
    n_patches = training.batch_size * training.patches_per_case
    torch.manual_seed(0)
    network = build_network(bundle.network.name, bundle.network.kwargs)
    forward_s, step_s = _train_step_timings(bundle, network, repeats)
    engine = TorchEngine(network, bundle.inference)
    volume = np.random.default_rng(0).random(volume_kji, dtype=np.float32)
    window_s = median_seconds(lambda: engine.predict(volume), max(repeats // 2, 1))
    n_windows = _window_count(volume_kji, bundle)
    epoch_s = math.ceil(N_CASES / training.batch_size) * step_s

    patch = "x".join(map(str, bundle.patch_size_kji))
    batch = f"{n_patches} x {patch}"
    volume_text = f"{'x'.join(map(str, volume_kji[::-1]))}, {n_windows} windows of {patch}"
    threads = torch.get_num_threads()
    epoch_patches = N_CASES * training.patches_per_case
    per_window_ratio = (window_s / n_windows) / (forward_s / n_patches)
    prepared = _prepared_case(quick)
    plain_s, inserting_s, per_patch = _loader_timings(bundle, prepared, repeats)
    s2_forward_s, s2_step_s, s2_draw_s, s2_inserted = _stage2_timings(prepared, repeats)
    s2_batch = Stage2Config().batch_size
    s2_patch = "x".join(map(str, Stage2Config().patch.shape_kji))
    s2_input = f"{s2_batch} x 2 x {s2_patch}"
    s2_per_hour = s2_inserted / (s2_step_s + s2_draw_s) * 3600
    cases_per_step = training.batch_size
    step_with_loader_s = step_s + cases_per_step * inserting_s
    lesions_per_hour = per_patch * n_patches / step_with_loader_s * 3600
    ppc = training.patches_per_case
    measures: list[tuple[str, str, float, int, float | None]] = [
        ("forward only, inference (baseline)", batch, forward_s, n_patches, 1.0),
        ("train step: forward + loss + backward + AdamW", batch, step_s, n_patches,
         step_s / forward_s),
        (f"epoch estimate: {N_CASES} cases x {training.patches_per_case} patches",
         f"{epoch_patches} patches", epoch_s, epoch_patches, None),
        ("sliding window, one volume (engine.predict)", volume_text, window_s, n_windows,
         per_window_ratio),
        ("loader: cut one case's patches, no insertion (baseline)", f"{ppc} patches", plain_s,
         ppc, None),
        (f"loader: cut one case's patches, insertion ({per_patch:.2f} lesions a patch)",
         f"{ppc} patches", inserting_s, ppc, None),
        (f"step + its loader on one CPU: {lesions_per_hour:,.0f} distinct lesions an hour",
         batch, step_with_loader_s, n_patches, None),
        ("stage 2: classifier forward only (its baseline)", s2_input, s2_forward_s, s2_batch,
         1.0),
        ("stage 2: train step", s2_input, s2_step_s, s2_batch, s2_step_s / s2_forward_s),
        (f"stage 2: sampler draws a batch ({s2_inserted:.1f} inserted lesions)", s2_input,
         s2_draw_s, s2_batch, None),
        (f"stage 2: step + sampler on one CPU: {s2_per_hour:,.0f} distinct lesions an hour",
         s2_input, s2_step_s + s2_draw_s, s2_batch, None),
    ]  # fmt: skip
    return [
        {
            "measure": measure,
            "input": data,
            "threads": threads,
            "seconds": seconds,
            "patches/s": patches / seconds,
            "x forward (s/patch)": "-" if ratio is None else ratio,
        }
        for measure, data, seconds, patches, ratio in measures
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny patches (smoke test)")
    args = parser.parse_args()
    print_table("Training throughput on CPU (shipped bundle)", run(quick=args.quick))


if __name__ == "__main__":
    main()
