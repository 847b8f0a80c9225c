"""Stage 2 of the two-stage detector (issue 14): a small 3-D CNN that scores stage-1 candidates.

Stage 1 (:mod:`pipelines.candidates`) proposes the first ``budget`` places of each scan; stage 2
reads a two-scale patch around each (:mod:`pipelines.patches`) and gives the probability that a
nodule is there. What it learns from, each step:

- **Real lesions** of the training cases, the patch centred near the lesion's centre (jittered as
  a candidate's centre would be).
- **Inserted lesions**: the generator's lesion model painted (:mod:`pipelines.training.insertion`)
  into a block of a training case around a stage-1 candidate that holds no lesion (a vessel
  branching, a bump of the pleura: the places that fool stage 1), so that every inserted nodule
  sits where stage 2 must tell one from the other; each is new, drawn with the case's slice
  thickness and its own appearance.
- **Negatives**: stage-1 candidates of the training cases that no lesion is near, half drawn
  uniformly and half by the score the network gave them when last seen (online hard-negative
  mining: the vessel branchings it still confuses come back until it stops).

Patches are flipped on each axis and their in-plane axes swapped at random. Training is
resumable from a checkpoint written every ``checkpoint_every`` steps. Evaluation
(:func:`evaluate_stage2`) scores the first ``budget`` candidates of each case and reports the
LUNA16 FROC (CPM with a bootstrap interval), sensitivity at 1 false positive a scan by size, type
and location, what lesion-free studies show, and the study AUC.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.bundle import InsertionConfig
from pipelines.candidates import CandidateConfig, find_candidates
from pipelines.datasets.manifest import Lesion, LesionType
from pipelines.datasets.prepare import PreparedCase, load_prepared_case
from pipelines.errors import InputError, InputNotFoundError
from pipelines.evaluation.bootstrap import bootstrap_case_weights, bootstrap_cis
from pipelines.evaluation.classification import compute_roc_auc
from pipelines.evaluation.froc import (
    FP_RATES,
    CaseDetections,
    collect_froc_entries,
    compute_froc_curves,
    sensitivities_at,
)
from pipelines.evaluation.report import LOCATIONS, lesion_location
from pipelines.evaluation.subgroups import SIZE_EDGES_MM, bin_label, bin_labels
from pipelines.patches import PatchSpec, coarsen, crop, extract_patches
from pipelines.training.insertion import PatchLungs, paint_one
from pipelines.transforms import PreprocessConfig

log = logging.getLogger(__name__)

#: a candidate this close to a lesion's surface (mm) is neither a positive nor a negative
NEAR_LESION_MARGIN_MM = 4.0
TYPES = tuple(kind.value for kind in LesionType if kind is not LesionType.UNKNOWN)
CHECKPOINT = "stage2_checkpoint.pt"
WEIGHTS = "stage2_model.pt"


@dataclass(frozen=True)
class Stage2Config:
    """Every choice of a stage-2 run (written beside its weights)."""

    patch: PatchSpec = field(default_factory=PatchSpec)
    #: candidates a scan that stage 2 scores; training negatives come from the first
    #: ``negative_budget``.
    budget: int = 200
    negative_budget: int = 400
    channels: tuple[int, int, int] = (8, 16, 32)
    batch_size: int = 32
    real_share: float = 0.2
    inserted_share: float = 0.3
    #: of the negatives, the share drawn by their last score instead of uniformly
    hard_share: float = 0.5
    steps: int = 1500
    learning_rate: float = 1e-3
    #: a positive's patch centre moves by a normal draw of this share of its radius (at most
    #: half the radius), as a candidate's centre lies off the lesion's
    jitter_radius_share: float = 0.2
    insertion: InsertionConfig = field(
        default_factory=lambda: InsertionConfig(probability=1.0, max_per_patch=1)
    )
    checkpoint_every: int = 250
    seed: int = 0


class CandidateClassifier(nn.Module):
    """Two-channel 3-D patch → one logit: three levels of two 3x3x3 convolutions (batch norm,
    ReLU), max-pooled between levels, then global average and max pooling into a linear layer.

    The first level runs at full resolution: the point of stage 2 is the 3-6 mm nodule, a few
    voxels wide, which a strided first convolution would blur into a vessel's cross-section.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution

        layers: list[nn.Module] = []
        previous = 2
        for level, width in enumerate(channels):
            if level:
                layers.append(nn.MaxPool3d(2))
            for _ in range(2):
                layers.append(
                    Convolution(3, previous, width, kernel_size=3, norm="batch", act="relu")
                )
                previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * previous, 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``[b, 2, k, j, i]`` patches → ``[b]`` logits."""
        features = self.features(patches)
        pooled = torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)
        return self.head(pooled)[:, 0]


@dataclass
class Stage2Case:
    """One prepared case held for stage 2: its image, lesions and stage-1 candidates."""

    case_id: str
    image: np.ndarray
    coarse: np.ndarray
    label: np.ndarray
    affine_lps: np.ndarray
    spacing_kji: np.ndarray
    lesions: list[Lesion]
    lesion_kji: np.ndarray
    candidates_kji: np.ndarray
    candidates_lps: np.ndarray
    near_lesion: np.ndarray
    slice_thickness_mm: float | None


def _candidates_of(path: Path, config: CandidateConfig) -> list[dict[str, Any]]:
    case = load_prepared_case(path)
    found = find_candidates(case["image"], case["affine_lps"], config)
    return [c.to_dict() for c in found]


def cache_candidates(
    data_dir: Path,
    cases: Sequence[PreparedCase],
    out: Path,
    config: CandidateConfig,
    workers: int = 1,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Stage-1 candidates of every case (``out`` JSON, case id → candidates, best first); cases
    already in ``out`` are kept, so an interrupted run continues."""
    done = read_candidates(out) if out.is_file() else {}
    todo = [case for case in cases if case.case_id not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [data_dir / case.cache for case in todo]
    with get_context("spawn").Pool(max(1, workers)) as pool:
        results = pool.imap(_candidates_star, [(path, config) for path in paths])
        for case, found in zip(todo, results, strict=True):
            done[case.case_id] = found
            out.write_text(json.dumps(done), encoding="utf-8")
            if on_case is not None:
                on_case(case.case_id)
    return done


def read_candidates(path: Path) -> dict[str, list[dict[str, Any]]]:
    """A candidates file of :func:`cache_candidates` (case id → candidates, best first).

    Raises:
        InputNotFoundError: the file does not exist.
        InputError: it is not such a file.
    """
    if not path.is_file():
        raise InputNotFoundError(
            f"No candidates file at {path}: run 'basira stage2 candidates' first.", path=str(path)
        )
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        found = None
    if not isinstance(found, dict) or not all(isinstance(v, list) for v in found.values()):
        raise InputError(
            f"{path} is not a candidates file of 'basira stage2 candidates'.", path=str(path)
        )
    return found


def candidates_of(path: Path, case_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """:func:`read_candidates`, refusing a file that lacks any of ``case_ids``.

    Raises:
        InputNotFoundError, InputError: as :func:`read_candidates`, or cases are missing.
    """
    found = read_candidates(path)
    missing = [case_id for case_id in case_ids if case_id not in found]
    if missing:
        raise InputError(
            f"{path} holds no candidates for {len(missing)} of the cases (first: {missing[0]}): "
            "run 'basira stage2 candidates' on this prepared folder.",
            path=str(path),
            missing=missing[:10],
        )
    return found


def _candidates_star(args: tuple[Path, CandidateConfig]) -> list[dict[str, Any]]:
    return _candidates_of(*args)


def _lesions(raw: list[dict[str, Any]]) -> tuple[list[Lesion], np.ndarray]:
    lesions = [
        Lesion.model_validate({k: v for k, v in item.items() if k in Lesion.model_fields})
        for item in raw
    ]
    kji = np.array([item["center_ijk"][::-1] for item in raw], np.float64).reshape(-1, 3)
    return lesions, kji


def load_stage2_case(
    data_dir: Path,
    case: PreparedCase,
    candidates: list[dict[str, Any]],
    spec: PatchSpec,
    budget: int,
    slice_thickness_mm: float | None = None,
) -> Stage2Case:
    """Read a prepared case with its first ``budget`` candidates (see :func:`stage2_case`)."""
    raw = load_prepared_case(data_dir / case.cache)
    return stage2_case(case.case_id, raw, candidates, spec, budget, slice_thickness_mm)


def stage2_case(
    case_id: str,
    prepared: Mapping[str, Any],
    candidates: list[dict[str, Any]],
    spec: PatchSpec,
    budget: int,
    slice_thickness_mm: float | None = None,
) -> Stage2Case:
    """A case held for stage 2 from its prepared arrays (``image``, ``label``, ``affine_lps`` and
    ``lesions`` as ``basira prepare`` caches them) and its first ``budget`` candidates, marking
    those near a lesion."""
    lesions, lesion_kji = _lesions(prepared["lesions"])
    chosen = candidates[:budget]
    cand_kji = np.array([c["center_ijk"][::-1] for c in chosen], np.float64).reshape(-1, 3)
    cand_lps = np.array([c["center_lps_mm"] for c in chosen], np.float64).reshape(-1, 3)
    near = np.zeros(len(chosen), bool)
    for lesion in lesions:
        gap = np.linalg.norm(cand_lps - np.asarray(lesion.center_lps_mm), axis=1)
        near |= gap <= lesion.diameter_mm / 2 + NEAR_LESION_MARGIN_MM
    image = np.asarray(prepared["image"])
    label = np.asarray(prepared["label"])
    affine = np.asarray(prepared["affine_lps"], np.float64)
    return Stage2Case(
        case_id=case_id,
        image=image,
        coarse=coarsen(image, spec.context_factor).astype(np.float16),
        label=label.astype(np.uint8) if label.size and label.max() < 255 else label,
        affine_lps=affine,
        spacing_kji=np.linalg.norm(affine[:3, :3], axis=0)[::-1],
        lesions=lesions,
        lesion_kji=lesion_kji,
        candidates_kji=cand_kji,
        candidates_lps=cand_lps,
        near_lesion=near,
        slice_thickness_mm=slice_thickness_mm,
    )


class Stage2Sampler:
    """Draws training batches (patches, labels) from the held cases; see the module docstring."""

    def __init__(
        self,
        cases: Sequence[Stage2Case],
        config: Stage2Config,
        preprocess: PreprocessConfig,
        rng: np.random.Generator,
    ) -> None:
        self.cases = list(cases)
        self.config = config
        self.preprocess = preprocess
        self.rng = rng
        self.positives = [
            (c, n) for c, case in enumerate(self.cases) for n in range(len(case.lesions))
        ]
        self.negatives = np.array(
            [
                (c, n)
                for c, case in enumerate(self.cases)
                for n in np.flatnonzero(~case.near_lesion)
            ],
            np.int64,
        ).reshape(-1, 2)
        #: each negative's probability when last scored (0.5 before it is seen)
        self.negative_scores = np.full(len(self.negatives), 0.5, np.float32)
        self.inserted = 0
        if not self.positives or not len(self.negatives):
            raise ValueError("stage-2 training needs cases with lesions and candidates without")

    def _jitter(self, diameter_mm: float, spacing_kji: np.ndarray) -> np.ndarray:
        radius = diameter_mm / 2
        offset = self.rng.normal(0, self.config.jitter_radius_share * radius, 3)
        length = float(np.linalg.norm(offset))
        if length > radius / 2:
            offset *= radius / 2 / length
        return offset / spacing_kji

    def _real(self) -> np.ndarray:
        c, n = self.positives[int(self.rng.integers(len(self.positives)))]
        case = self.cases[c]
        centre = case.lesion_kji[n] + self._jitter(case.lesions[n].diameter_mm, case.spacing_kji)
        return extract_patches(case.image, centre[None], self.config.patch, case.coarse)[0]

    def _inserted(self) -> np.ndarray | None:
        """A lesion painted near a lesion-free candidate; None when it found no room."""
        c, n = self.negatives[int(self.rng.integers(len(self.negatives)))]
        case = self.cases[c]
        spec = self.config.patch
        factor = spec.context_factor
        shape = tuple(int(s * factor * 1.5) for s in spec.shape_kji)
        inner = tuple(s * 2 // 3 for s in spec.shape_kji)
        anchor = np.rint(case.candidates_kji[n]).astype(np.int64)
        region = crop(case.image, anchor, shape)
        labels = crop(case.label, anchor, shape, case.label.dtype)
        lo = [(s - i) // 2 for s, i in zip(shape, inner, strict=True)]
        sub = tuple(slice(a, a + i) for a, i in zip(lo, inner, strict=True))
        lungs = PatchLungs(region[sub], self.preprocess)
        if not lungs.usable:
            return None
        inner_labels = labels[sub]
        plan = paint_one(
            region[sub],
            inner_labels,
            lungs,
            self.config.insertion,
            self.preprocess,
            self.rng,
            case.slice_thickness_mm,
        )
        if plan is None:
            return None
        mask = inner_labels == inner_labels.max()
        centre = np.argwhere(mask).mean(axis=0) + np.asarray(lo)
        centre = centre + self._jitter(plan.diameter_mm, case.spacing_kji)
        self.inserted += 1
        return extract_patches(region, centre[None], spec)[0]

    def _negative(self, hard: bool) -> tuple[np.ndarray, int]:
        if hard:
            weights = self.negative_scores.astype(np.float64) + 1e-3
            index = int(self.rng.choice(len(weights), p=weights / weights.sum()))
        else:
            index = int(self.rng.integers(len(self.negatives)))
        c, n = self.negatives[index]
        case = self.cases[c]
        patch = extract_patches(
            case.image, case.candidates_kji[n][None], self.config.patch, case.coarse
        )
        return patch[0], index

    def _augment(self, patch: np.ndarray) -> np.ndarray:
        for axis in (1, 2, 3):
            if self.rng.random() < 0.5:
                patch = np.flip(patch, axis)
        if self.rng.random() < 0.5:
            patch = np.swapaxes(patch, 2, 3)
        return np.ascontiguousarray(patch)

    def batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patches ``[b, 2, k, j, i]``, labels ``[b]`` and, per patch, the index of the negative it
        is (-1 for a positive)."""
        config = self.config
        size = config.batch_size
        n_real = round(size * config.real_share)
        n_inserted = round(size * config.inserted_share)
        patches: list[np.ndarray] = []
        labels: list[float] = []
        negative_index: list[int] = []
        for _ in range(n_real):
            patches.append(self._real())
        while len(patches) < n_real + n_inserted:
            painted = None
            for _ in range(4):
                painted = self._inserted()
                if painted is not None:
                    break
            patches.append(painted if painted is not None else self._real())
        labels.extend([1.0] * len(patches))
        negative_index.extend([-1] * len(patches))
        while len(patches) < size:
            patch, index = self._negative(self.rng.random() < config.hard_share)
            patches.append(patch)
            labels.append(0.0)
            negative_index.append(index)
        stacked = np.stack([self._augment(p) for p in patches])
        return stacked, np.asarray(labels, np.float32), np.asarray(negative_index, np.int64)


@dataclass
class Stage2Run:
    """What a training run did: steps, patches, distinct inserted lesions, loss per 50 steps."""

    steps: int
    patches: int
    inserted_lesions: int
    seconds: float
    loss_history: list[float]


def train_stage2(
    cases: Sequence[Stage2Case],
    config: Stage2Config,
    out_dir: Path,
    preprocess: PreprocessConfig,
    *,
    threads: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Stage2Run:
    """Train :class:`CandidateClassifier` on ``cases``; resumes from ``out_dir``'s checkpoint.

    Writes ``stage2_model.pt`` (weights), ``stage2_config.json`` and ``stage2_run.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    model = CandidateClassifier(config.channels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.steps, pct_start=0.1
    )
    sampler = Stage2Sampler(cases, config, preprocess, np.random.default_rng(config.seed))
    step, losses, patches, seconds = 0, [], 0, 0.0
    checkpoint = out_dir / CHECKPOINT
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        sampler.negative_scores = state["negative_scores"]
        sampler.rng.bit_generator.state = state["rng"]
        sampler.inserted = state["inserted"]
        step, losses, patches, seconds = (
            state["step"],
            state["losses"],
            state["patches"],
            state["seconds"],
        )
    loss_fn = nn.BCEWithLogitsLoss()
    window: list[float] = []
    model.train()
    while step < config.steps:
        started = time.perf_counter()
        batch, labels, negative_index = sampler.batch()
        logits = model(torch.from_numpy(batch))
        loss = loss_fn(logits, torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        probs = torch.sigmoid(logits.detach()).numpy()
        seen = negative_index >= 0
        sampler.negative_scores[negative_index[seen]] = probs[seen]
        step += 1
        patches += len(batch)
        seconds += time.perf_counter() - started
        value = loss.item()
        window.append(value)
        if len(window) == 50:
            losses.append(float(np.mean(window)))
            window = []
        if on_step is not None:
            on_step(step, value)
        if step % config.checkpoint_every == 0 or step == config.steps:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "negative_scores": sampler.negative_scores,
                    "rng": sampler.rng.bit_generator.state,
                    "inserted": sampler.inserted,
                    "step": step,
                    "losses": losses,
                    "patches": patches,
                    "seconds": seconds,
                },
                checkpoint,
            )
    torch.save(model.state_dict(), out_dir / WEIGHTS)
    run = Stage2Run(step, patches, sampler.inserted, seconds, losses)
    (out_dir / "stage2_config.json").write_text(
        json.dumps(asdict(config), indent=1, default=str) + "\n", encoding="utf-8"
    )
    (out_dir / "stage2_run.json").write_text(
        json.dumps(asdict(run), indent=1) + "\n", encoding="utf-8"
    )
    return run


def load_classifier(out_dir: Path, config: Stage2Config) -> CandidateClassifier:
    """The trained classifier of a run folder, in eval mode.

    Raises:
        InputNotFoundError: the folder holds no trained weights.
    """
    if not (out_dir / WEIGHTS).is_file():
        raise InputNotFoundError(
            f"No {WEIGHTS} in {out_dir}: train it with 'basira stage2 train --out {out_dir}'.",
            path=str(out_dir / WEIGHTS),
        )
    model = CandidateClassifier(config.channels)
    model.load_state_dict(torch.load(out_dir / WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def score_points(
    model: CandidateClassifier,
    case: Stage2Case,
    centres_kji: np.ndarray,
    spec: PatchSpec,
    batch: int = 64,
) -> np.ndarray:
    """Stage 2's probability of a nodule at each of ``centres_kji`` (``[n, 3]``) of the case."""
    scores = []
    with torch.inference_mode():
        for start in range(0, len(centres_kji), batch):
            patches = extract_patches(
                case.image, centres_kji[start : start + batch], spec, case.coarse
            )
            scores.append(torch.sigmoid(model(torch.from_numpy(patches))).numpy())
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def evaluate_stage2(
    detections: Sequence[CaseDetections],
    lesions: Sequence[Sequence[Lesion]],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """FROC figures of scored candidates (one :class:`CaseDetections` per case) by lesion group,
    the lesion-free studies at the 1-false-positive-a-scan threshold, and the study AUC."""
    groups: dict[str, list[np.ndarray]] = {"all": []}
    for case_lesions in lesions:
        sizes = [bin_label(lesion.diameter_mm, SIZE_EDGES_MM) for lesion in case_lesions]
        groups["all"].append(np.ones(len(case_lesions), bool))
        for size in bin_labels(SIZE_EDGES_MM):
            groups.setdefault(f"size {size}", []).append(np.array([s == size for s in sizes], bool))
        for kind in TYPES:
            groups.setdefault(f"type {kind}", []).append(
                np.array([str(lesion.type) == kind for lesion in case_lesions], bool)
            )
        for place in LOCATIONS:
            groups.setdefault(f"location {place}", []).append(
                np.array([lesion_location(lesion) == place for lesion in case_lesions], bool)
            )
    weights = bootstrap_case_weights(len(detections), n_bootstrap, seed)
    out: dict[str, Any] = {"n_cases": len(detections), "groups": {}}
    for name, included in groups.items():
        entries = collect_froc_entries(detections, included)

        def statistic(w: np.ndarray, entries: Any = entries) -> np.ndarray:
            fps, sens = compute_froc_curves(entries, w)
            at = sensitivities_at(fps, sens, FP_RATES)
            return np.column_stack([at.mean(axis=1), at[:, FP_RATES.index(1.0)]])

        cpm, at_one = bootstrap_cis(statistic, weights)
        found = int(entries.is_hit.sum())
        out["groups"][name] = {
            "n_lesions": int(entries.lesions_per_case.sum()),
            "found_at_any_score": found,
            "cpm": asdict(cpm),
            "sensitivity_at_1fp": asdict(at_one),
        }
    entries = collect_froc_entries(detections)
    false_scores = np.sort(entries.scores[~entries.is_hit])[::-1]
    # the score at which the findings hold one false positive a scan on average
    threshold = (
        float(false_scores[len(detections) - 1]) if len(false_scores) >= len(detections) else 0.0
    )
    free = [d for d in detections if len(d.lesion_centers_lps_mm) == 0]
    counts = np.array([int(np.sum(d.pred_scores >= threshold)) for d in free])
    above_half = np.array([int(np.sum(d.pred_scores >= 0.5)) for d in free])
    out["lesion_free"] = {
        "n_cases": len(free),
        "threshold_at_1fp": threshold,
        "findings_median_at_1fp": float(np.median(counts)) if counts.size else None,
        "share_with_a_finding_at_1fp": float(np.mean(counts > 0)) if counts.size else None,
        "findings_median_above_0.5": float(np.median(above_half)) if above_half.size else None,
        "share_with_a_finding_above_0.5": float(np.mean(above_half > 0))
        if above_half.size
        else None,
    }
    study_scores = np.array([float(d.pred_scores.max(initial=0.0)) for d in detections])
    study_labels = np.array([len(d.lesion_centers_lps_mm) > 0 for d in detections])
    out["study_auc_max"] = (
        compute_roc_auc(study_scores, study_labels)
        if 0 < study_labels.sum() < len(detections)
        else None
    )
    return out


def detections_of(
    case: Stage2Case,
    scores: np.ndarray,
    budget: int,
    extra_lps: np.ndarray | None = None,
    extra_scores: np.ndarray | None = None,
) -> CaseDetections:
    """A case's first ``budget`` scored candidates, and any other scored proposals
    (``extra_lps`` ``[n, 3]``, ``extra_scores`` ``[n]``), as FROC input."""
    centres = case.candidates_lps[:budget]
    values = np.asarray(scores, np.float64)[:budget]
    if extra_lps is not None and extra_scores is not None:
        centres = np.vstack([centres, np.asarray(extra_lps, np.float64).reshape(-1, 3)])
        values = np.concatenate([values, np.asarray(extra_scores, np.float64)])
    return CaseDetections(
        case_id=case.case_id,
        lesion_centers_lps_mm=np.array(
            [lesion.center_lps_mm for lesion in case.lesions], np.float64
        ).reshape(-1, 3),
        lesion_diameters_mm=np.array([lesion.diameter_mm for lesion in case.lesions], np.float64),
        pred_centers_lps_mm=centres,
        pred_scores=values,
    )
