"""``train(bundle, options)``: the training run behind ``basira train``.

One epoch = every training case once (sharded across ``torchrun`` processes), each giving
``patches_per_case`` balanced patches. AdamW with a cosine learning-rate schedule over the
bundle's epochs; AMP only on CUDA. Every ``validate_every`` epochs (and after the last) the main
process validates on the production path (:mod:`pipelines.training.validation`); the best
validation CPM so far is kept as ``best_model.pt`` and training stops early after
``early_stopping_patience`` validations without improvement. A checkpoint is written after every
epoch, so ``resume=True`` continues exactly (same data, same numbers) as if never stopped.

Run folder: ``bundle.yaml`` (the effective bundle), ``checkpoint.pt``, ``best_model.pt``,
``history.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.bundle import Bundle, flatten_bundle, preprocessing_hash, write_bundle
from pipelines.datasets.manifest import Split
from pipelines.datasets.prepare import (
    PreparedCase,
    cases_of_split,
    check_preprocess,
    read_prepared_index,
)
from pipelines.engine.torch_engine import TorchEngine, torch_threads
from pipelines.evaluation.inference import LoadedCase, load_case
from pipelines.model.tracking import NullTracker, Tracker, data_version
from pipelines.networks import build_network, set_output_prior
from pipelines.training.checkpoint import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    TrainState,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from pipelines.training.data import PatchDataset, build_train_transform, patch_loader
from pipelines.training.distributed import (
    DistContext,
    barrier,
    broadcast_flag,
    broadcast_object,
    mean_across,
    setup_distributed,
    teardown,
)
from pipelines.training.insertion import INSERTED_KEY
from pipelines.training.losses import build_loss
from pipelines.training.mining import mine
from pipelines.training.progress import TrainProgress
from pipelines.training.validation import load_validation_cases, validate


@dataclass(frozen=True)
class TrainOptions:
    """How to run a bundle's recipe: data, output, machine and bookkeeping.

    ``epochs`` overrides the bundle's count; ``threads`` sets torch's CPU threads; ``workers``
    is the DataLoader process count. ``on_epoch_end(epoch, metrics)`` is called on the main
    process after each epoch's checkpoint is written.
    """

    data_dir: Path
    out_dir: Path
    resume: bool = False
    epochs: int | None = None
    device: str = "cpu"
    workers: int = 0
    threads: int | None = None
    progress: bool = True
    hold_gb: float = 8.0  # training cases kept in memory (with where to draw their patches)
    tracker: Tracker = field(default_factory=NullTracker)
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a finished run achieved; ``history`` holds one metrics dict per epoch."""

    out_dir: Path
    epochs_completed: int
    best_metric: float
    best_epoch: int
    stopped_early: bool
    history: list[dict[str, float]]


@dataclass
class _Run:
    bundle: Bundle
    options: TrainOptions
    context: DistContext
    model: nn.Module
    trained: nn.Module  # the model, or its DDP wrapper
    components: dict[str, Any]
    loss_fn: nn.Module
    dataset: PatchDataset
    loader: Any
    sampler: Any
    val_cases: list[LoadedCase]
    state: TrainState
    train_cases: list[PreparedCase]


def with_epochs(bundle: Bundle, epochs: int | None) -> Bundle:
    """``bundle`` with ``training.epochs`` replaced (unchanged for ``None``)."""
    if epochs is None:
        return bundle
    training = bundle.training.model_copy(update={"epochs": epochs})
    return bundle.model_copy(update={"training": training})


def train(bundle: Bundle, options: TrainOptions) -> TrainResult:
    """Train ``bundle`` on the prepared data in ``options.data_dir`` (see module docstring).

    Raises:
        InputNotFoundError, ConfigError: no or invalid ``prepared.json``.
        EmptySplitError: no train or no val cases. PreprocessMismatchError: the cache was
            prepared differently. CheckpointNotFoundError, CheckpointMismatchError: on resume.
        DeviceUnavailableError: CUDA asked for but absent.
    """
    bundle = with_epochs(bundle, options.epochs)
    context = setup_distributed(options.device)
    try:
        with torch_threads(options.threads):
            run = _prepare(bundle, options, context)
            return _tracked(run)
    finally:
        teardown(context)


def _prepare(bundle: Bundle, options: TrainOptions, context: DistContext) -> _Run:
    """Check the data, build model and optimiser (restored on resume), loader and val cases."""
    index = read_prepared_index(options.data_dir)
    check_preprocess(index, bundle.preprocess, bundle.name)
    train_cases = cases_of_split(index, Split.TRAIN)
    val_cases = cases_of_split(index, Split.VAL)
    components = _components(bundle, context)
    state = TrainState()
    if options.resume:
        state = load_checkpoint(options.out_dir / CHECKPOINT_NAME, bundle, components)
        components["scheduler"].T_max = bundle.training.epochs
    seed = bundle.training.seed
    dataset = PatchDataset(
        options.data_dir, train_cases, build_train_transform(bundle), seed, bundle.patch_size_kji
    )
    dataset.set_mined(state.mined)
    dataset.hold_in_memory(int(options.hold_gb * 2**30))
    loader, sampler = patch_loader(
        dataset,
        bundle.training.batch_size,
        rank=context.rank,
        world_size=context.world_size,
        workers=options.workers,
    )
    model = components["model"]
    trained: nn.Module = model
    if context.distributed:
        device_ids = [context.device] if context.device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    validation = load_validation_cases(options.data_dir, val_cases) if context.is_main else []
    loss_fn = build_loss(bundle.training.loss)
    return _Run(bundle, options, context, model, trained, components, loss_fn, dataset, loader,
                sampler, validation, state, train_cases)  # fmt: skip


def _components(bundle: Bundle, context: DistContext) -> dict[str, Any]:
    """Seeded model (with the recipe's output prior, if any), AdamW, cosine schedule to 1 % of
    ``lr``, AMP scaler (active on CUDA)."""
    from monai.utils import set_determinism

    training = bundle.training
    set_determinism(seed=training.seed)
    model = build_network(bundle.network.name, bundle.network.kwargs)
    if training.output_prior is not None:
        set_output_prior(model, training.output_prior)
    model = model.to(context.device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training.lr, weight_decay=training.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=training.epochs, eta_min=training.lr * 0.01
    )
    scaler = torch.amp.GradScaler("cuda", enabled=_use_amp(bundle, context))
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}


def _use_amp(bundle: Bundle, context: DistContext) -> bool:
    return bundle.training.amp and context.device.type == "cuda"


def _tracked(run: _Run) -> TrainResult:
    """Open (or reopen) the tracking run around the epochs; record how it ended."""
    tracker = run.options.tracker if run.context.is_main else NullTracker()
    if run.context.is_main:
        run.options.out_dir.mkdir(parents=True, exist_ok=True)
        write_bundle(run.bundle, run.options.out_dir / "bundle.yaml")
        tags = {
            **data_version(run.options.data_dir),
            "preprocessing_hash": preprocessing_hash(run.bundle),
            "device": str(run.context.device),
            "world_size": str(run.context.world_size),
        }
        new_run = run.state.tracking_run_id is None
        run.state.tracking_run_id = tracker.start(
            run.options.out_dir.name, flatten_bundle(run.bundle), tags, run.state.tracking_run_id
        )
        if new_run:
            tracker.log_artifact(run.options.out_dir / "bundle.yaml")
    try:
        result = _epochs(run, tracker)
    except BaseException as exc:
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    for name in (BEST_WEIGHTS_NAME, "history.json"):
        if (run.options.out_dir / name).is_file():
            tracker.log_artifact(run.options.out_dir / name)
    tracker.finish("FINISHED")
    return result


def _epochs(run: _Run, tracker: Tracker) -> TrainResult:
    total = run.bundle.training.epochs
    stop = False
    show = run.options.progress and run.context.is_main
    with TrainProgress(show, total, run.state.epoch) as progress:
        while run.state.epoch < total and not stop:
            epoch = run.state.epoch
            started = time.perf_counter()
            loss, patches, inserted = _train_epoch(run, progress, epoch)
            train_seconds = time.perf_counter() - started
            world = run.context.world_size
            metrics = {
                "loss": loss,
                "train_seconds": train_seconds,
                "patches_per_s": patches * world / max(train_seconds, 1e-9),
                "inserted_lesions": float(inserted * world),
            }
            metrics["lr"] = run.components["scheduler"].get_last_lr()[0]
            run.components["scheduler"].step()
            if _mining_due(run.bundle, epoch + 1):
                progress.note("mining hard negatives")
                _mine(run, metrics)
            if (epoch + 1) % run.bundle.training.validate_every == 0 or epoch + 1 == total:
                progress.note("validating")
                stop = _validate(run, metrics)
            metrics["epoch_seconds"] = time.perf_counter() - started
            run.state.epoch = epoch + 1
            _end_epoch(run, tracker, metrics)
            progress.end_epoch(_summary(epoch, total, metrics))
    state = run.state
    return TrainResult(
        run.options.out_dir, state.epoch, state.best_metric, state.best_epoch, stop, state.history
    )


def _train_epoch(run: _Run, progress: TrainProgress, epoch: int) -> tuple[float, int, int]:
    """One pass over this process's share of the training cases.

    Returns the mean loss over every process, the number of patches this process saw and the
    number of synthetic lesions inserted into them (each drawn afresh, so each distinct).
    """
    run.sampler.set_epoch(epoch)
    run.dataset.set_epoch(epoch)
    run.trained.train()
    optimizer, scaler = run.components["optimizer"], run.components["scaler"]
    device = run.context.device
    amp = _use_amp(run.bundle, run.context)
    progress.start_epoch(epoch, len(run.loader))
    total, steps, patches, inserted = 0.0, 0, 0, 0
    for batch in run.loader:
        images, labels = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            loss = run.loss_fn(run.trained(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.item())
        steps += 1
        patches += int(images.shape[0])
        inserted += int(batch[INSERTED_KEY].sum()) if INSERTED_KEY in batch else 0
        progress.step(float(loss.item()))
    return mean_across(run.context, total / max(steps, 1)), patches, inserted


def _mining_due(bundle: Bundle, epochs_done: int) -> bool:
    """A mining round follows every ``mine_every`` epochs, except after the last."""
    training = bundle.training
    return (
        training.mine_every > 0
        and training.mined_fraction > 0
        and epochs_done % training.mine_every == 0
        and epochs_done < training.epochs
    )


def _mine(run: _Run, metrics: dict[str, float]) -> None:
    """Main process: run the model over the training cases and keep each one's false-positive
    centres (:mod:`pipelines.training.mining`); every process then draws from them."""
    mined: dict[int, Any] = {}
    if run.context.is_main:
        bundle, training = run.bundle, run.bundle.training
        engine = TorchEngine(
            run.model, bundle.inference, preprocess=bundle.preprocess, device=run.context.device
        )
        config = bundle.findings.model_copy(
            update={"threshold": training.mine_threshold, "max_findings": training.mine_per_case}
        )
        data_dir = run.options.data_dir
        cases = ((n, load_case(data_dir, case)) for n, case in enumerate(run.train_cases))
        mined = mine(engine, cases, config)
    mined = broadcast_object(run.context, mined)
    run.state.mined = {str(index): centres.tolist() for index, centres in mined.items()}
    run.dataset.set_mined(run.state.mined)
    metrics["mined_negatives"] = float(sum(len(centres) for centres in mined.values()))


def _validate(run: _Run, metrics: dict[str, float]) -> bool:
    """Main process: validate, keep the best weights, decide on early stopping; broadcast."""
    stop = False
    if run.context.is_main:
        bundle = run.bundle
        engine = TorchEngine(
            run.model, bundle.inference, preprocess=bundle.preprocess, device=run.context.device
        )
        metrics.update(validate(engine, run.val_cases, run.bundle.findings))
        state = run.state
        if metrics["cpm"] > state.best_metric:
            state.best_metric, state.best_epoch = metrics["cpm"], state.epoch + 1
            state.validations_without_improvement = 0
            save_weights(run.options.out_dir / BEST_WEIGHTS_NAME, run.model)
        else:
            state.validations_without_improvement += 1
        stop = state.validations_without_improvement >= run.bundle.training.early_stopping_patience
    barrier(run.context)
    return broadcast_flag(run.context, stop)


def _end_epoch(run: _Run, tracker: Tracker, metrics: dict[str, float]) -> None:
    """Main process: history, checkpoint, tracking, callback (in that order)."""
    if not run.context.is_main:
        return
    epoch = run.state.epoch
    run.state.history.append({"epoch": float(epoch), **metrics})
    out = run.options.out_dir
    (out / "history.json").write_text(json.dumps(run.state.history, indent=2) + "\n")
    save_checkpoint(out / CHECKPOINT_NAME, run.bundle, run.state, run.components)
    tracker.log_metrics(metrics, step=epoch)
    if run.options.on_epoch_end is not None:
        run.options.on_epoch_end(epoch, metrics)


def _summary(epoch: int, total: int, metrics: dict[str, float]) -> str:
    shown = ("loss", "inserted_lesions", "mined_negatives", "cpm", "auc", "dice")
    parts = [f"{key} {metrics[key]:.4f}" for key in shown if key in metrics]
    return f"epoch {epoch + 1}/{total} " + " ".join(parts)
