"""Evaluation and calibration runs of a model bundle on one split of prepared data.

:func:`predict_split` runs the production path (:func:`~pipelines.evaluation.inference.infer_case`)
on every case of a split; :func:`evaluate_model` adds the metrics (``basira evaluate``),
:func:`evaluate_predictions` recomputes them from a ``predictions.json`` alone, and
:func:`calibrate_model` fits the bundle's calibration (``basira calibrate``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.bundle import Bundle, load_bundle
from pipelines.calibration import BundleCalibration, CalibrationMethod, load_calibration
from pipelines.datasets.manifest import Split
from pipelines.datasets.prepare import cases_of_split, check_preprocess, read_prepared_index
from pipelines.evaluation.calibrate import (
    choose_findings_threshold,
    fit_bundle_calibration,
    save_calibration,
)
from pipelines.evaluation.inference import (
    LoadedCase,
    file_sha256,
    infer_case,
    infer_case_at_thresholds,
    load_case,
    split_data_hash,
)
from pipelines.evaluation.predictions import (
    DataInfo,
    ModelInfo,
    Predictions,
    build_predictions,
    write_predictions,
)
from pipelines.evaluation.report import (
    CaseRecord,
    EvaluationConfig,
    evaluate_cases,
    write_metrics,
)

if TYPE_CHECKING:
    from pipelines.datasets.prepare import PreparedCase
    from pipelines.engine.torch_engine import TorchEngine


@dataclass(frozen=True)
class RunOptions:
    """Where and how inference runs; ``on_case(case_id)`` is called after each case."""

    device: str = "cpu"
    threads: int | None = None
    on_case: Callable[[str], None] | None = None


def bundle_file(path: Path) -> Path:
    """``path`` itself if it is a file, else ``path/bundle.yaml`` (a bundle folder)."""
    return path / "bundle.yaml" if path.is_dir() else path


def load_engine(bundle: Bundle, weights: Path, options: RunOptions) -> TorchEngine:
    """The bundle's network with ``weights`` behind the torch engine, as ``options`` say
    (:func:`pipelines.engine.load_torch_engine`; its errors)."""
    from pipelines.engine import load_torch_engine

    return load_torch_engine(bundle, weights, device=options.device, threads=options.threads)


def predict_split(
    bundle_path: Path,
    weights: Path,
    data_dir: Path,
    split: Split,
    options: RunOptions,
    *,
    calibrated: bool = True,
) -> Predictions:
    """Run the production path on every case of ``split`` (calibrated if the bundle is and
    ``calibrated`` is True; calibration itself is fit on uncalibrated predictions).

    Raises:
        InputNotFoundError, ConfigError: a missing or invalid bundle, index or calibration.
        PreprocessMismatchError: the data was prepared otherwise than the bundle declares.
        EmptySplitError: the split has no case. CheckpointMismatchError: wrong weights.
    """
    bundle = load_bundle(bundle_path)
    calibration = load_calibration(bundle_path.parent, bundle) if calibrated else None
    run = _SplitRun.open(bundle, weights, data_dir, split, options)
    records = []
    for loaded in run.loaded_cases():
        records.append(infer_case(run.engine, loaded, bundle.findings, calibration))
    return run.predictions(records, calibration)


def predict_split_at_thresholds(
    bundle_path: Path,
    weights: Path,
    data_dir: Path,
    split: Split,
    thresholds: Sequence[float],
    options: RunOptions,
) -> dict[float, Predictions]:
    """Uncalibrated :func:`predict_split` with findings extracted at each of ``thresholds``
    instead of the bundle's (one network pass per case); same errors."""
    bundle = load_bundle(bundle_path)
    run = _SplitRun.open(bundle, weights, data_dir, split, options)
    records: dict[float, list[CaseRecord]] = {threshold: [] for threshold in thresholds}
    for loaded in run.loaded_cases():
        by_threshold = infer_case_at_thresholds(run.engine, loaded, bundle.findings, thresholds)
        for threshold, record in by_threshold.items():
            records[threshold].append(record)
    return {threshold: run.predictions(found, None) for threshold, found in records.items()}


@dataclass(frozen=True)
class _SplitRun:
    """A bundle's engine over one split of prepared data, and how to describe its output."""

    bundle: Bundle
    weights: Path
    data_dir: Path
    split: Split
    cases: list[PreparedCase]
    engine: TorchEngine
    options: RunOptions

    @classmethod
    def open(
        cls, bundle: Bundle, weights: Path, data_dir: Path, split: Split, options: RunOptions
    ) -> _SplitRun:
        index = read_prepared_index(data_dir)
        check_preprocess(index, bundle.preprocess, bundle.name)
        cases = cases_of_split(index, split)
        engine = load_engine(bundle, weights, options)
        return cls(bundle, weights, data_dir, split, cases, engine, options)

    def loaded_cases(self) -> Iterator[LoadedCase]:
        """Each case read from the cache, in index order (``on_case`` called after each)."""
        from pipelines.datasets.prepare import source_slice_thicknesses

        thickness = source_slice_thicknesses(self.data_dir)
        for case in self.cases:
            yield load_case(self.data_dir, case, thickness.get(case.case_id))
            if self.options.on_case is not None:
                self.options.on_case(case.case_id)

    def predictions(
        self, records: Sequence[CaseRecord], calibration: BundleCalibration | None
    ) -> Predictions:
        model = ModelInfo(
            name=self.bundle.name,
            version=self.bundle.version,
            weights_sha256=self._weights_sha256,
            calibration_method=None if calibration is None else str(calibration.method),
            operating_point=None if calibration is None else self.bundle.operating_point,
        )
        return build_predictions(model, self._data_info, records)

    @cached_property
    def _weights_sha256(self) -> str:
        return file_sha256(self.weights)

    @cached_property
    def _data_info(self) -> DataInfo:
        """Hashes every cached case file: computed once however many predictions are built."""
        return DataInfo(
            path=str(self.data_dir),
            split=str(self.split),
            sha256=split_data_hash(self.data_dir, self.cases),
            n_cases=len(self.cases),
        )


def evaluate_predictions(
    predictions: Predictions, config: EvaluationConfig, out_dir: Path
) -> dict[str, Any]:
    """``metrics.json`` and plots for ``predictions``; returns the metrics.

    The study is called positive at the bundle's operating point when the predictions were
    calibrated (it is a threshold on the calibrated probability), else at
    ``config.study_threshold``.
    """
    if predictions.model.operating_point is not None:
        config = config.model_copy(update={"study_threshold": predictions.model.operating_point})
    metrics = evaluate_cases(predictions.records(), config)
    metrics["model"] = predictions.model.model_dump(mode="json")
    metrics["data"] = predictions.data.model_dump(mode="json")
    write_metrics(metrics, out_dir)
    return metrics


def evaluate_model(
    bundle_path: Path,
    weights: Path,
    data_dir: Path,
    split: Split,
    out_dir: Path,
    config: EvaluationConfig,
    options: RunOptions,
) -> dict[str, Any]:
    """Predict ``split``, write ``predictions.json``, ``metrics.json`` and the plots."""
    predictions = predict_split(bundle_path, weights, data_dir, split, options)
    write_predictions(predictions, out_dir)
    return evaluate_predictions(predictions, config, out_dir)


@dataclass(frozen=True)
class CalibrationRequest:
    """What ``basira calibrate`` fits, and where the calibrated bundle goes (None: in place).

    ``findings_thresholds``: candidate findings thresholds; the one
    :func:`~pipelines.evaluation.calibrate.choose_findings_threshold` picks on the split goes
    into the bundle; empty keeps the bundle's.
    """

    method: CalibrationMethod
    target_sensitivity: float
    out_dir: Path | None = None
    findings_thresholds: tuple[float, ...] = ()


def calibrate_model(
    bundle_path: Path,
    weights: Path,
    data_dir: Path,
    split: Split,
    request: CalibrationRequest,
    options: RunOptions,
) -> BundleCalibration:
    """Fit the bundle's calibration on uncalibrated predictions of ``split`` and store it,
    after choosing the findings threshold on the same predictions when the request lists
    candidates.

    Raises:
        MissingClassError: the split lacks an outcome a calibrator needs (see
            :func:`~pipelines.evaluation.calibrate.fit_bundle_calibration`), and everything
            :func:`predict_split` raises.
    """
    choice = None
    if request.findings_thresholds:
        by_threshold = predict_split_at_thresholds(
            bundle_path, weights, data_dir, split, request.findings_thresholds, options
        )
        choice = choose_findings_threshold(
            {threshold: found.records() for threshold, found in by_threshold.items()}
        )
        predictions = by_threshold[choice.threshold]
    else:
        predictions = predict_split(
            bundle_path, weights, data_dir, split, options, calibrated=False
        )
    calibration = fit_bundle_calibration(
        predictions.records(),
        request.method,
        request.target_sensitivity,
        predictions.data,
        findings_threshold=choice,
    )
    target = bundle_path
    if request.out_dir is not None:
        request.out_dir.mkdir(parents=True, exist_ok=True)
        target = request.out_dir / "bundle.yaml"
        shutil.copyfile(bundle_path, target)
    save_calibration(target, calibration)
    return calibration
