"""``basira predict``: DICOM studies in, one result JSON (and SEG/SR/FHIR/key images) per study out.

The model release is verified and its engine loaded once per batch. Each study's selected series
is read (the next study's read overlaps the current study's inference, one slot ahead), checked
against the model's intended use, preprocessed with the bundle's own config, run through the
engine, and its probability map becomes findings with calibrated confidences and a calibrated
study probability labelled at the operating point (:func:`apply_calibration`, the same code
evaluation uses). Finding centres are mapped to source voxel indices and to the nearest source
slice's SOPInstanceUID, and the findings mask is mapped back to the source grid, where
:func:`~pipelines.reports.representable_findings` keeps the findings every output can show (the
others are named in ``withheld``), for every run whatever its formats. The DICOM and FHIR
outputs are written by :func:`~pipelines.reports.write_each_output`, which checks each before
releasing it and withholds, with a coded reason, only an object that fails.

Every study ends with a result: ``completed`` (with the diagnosis, even when an output was
withheld); ``not_analysable`` (no analysable series, out of intended use, or input the reader
refuses: its code is the reason); or ``failed`` (our own error: its code, ``predict.failed`` for
an unexpected one, whose message gives only the id under which its traceback was logged). One
study's failure never stops the batch. See ``docs/predict.md``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from pydicom.dataset import Dataset

from pipelines.bundle import BUNDLE_FILE, Bundle
from pipelines.calibration import BundleCalibration, apply_calibration, load_calibration
from pipelines.dicom.index import StudyEntry, index_inputs
from pipelines.dicom.read import ReadPolicy, read_series_volume
from pipelines.dicom.selection import Reason
from pipelines.engine.base import Engine
from pipelines.engine.chooser import AUTO, EngineChoice, ModelFiles, choose_engine
from pipelines.errors import (
    BasiraError,
    ConfigError,
    ModelError,
    ModelNotFoundError,
    NoDicomFoundError,
    PredictionFailedError,
    SeriesTooSmallError,
)
from pipelines.findings import Finding, extract_findings_with_mask
from pipelines.inference.intended_use import IntendedUseLimits, check_intended_use
from pipelines.model.release import ONNX_FILE, SUMS_FILE, WEIGHTS_FILE, verify_release
from pipelines.reports import (
    AlgorithmInfo,
    AnalysedStudy,
    OutputFormat,
    StudyConclusion,
    WithheldOutput,
    read_source_headers,
    representable_findings,
    write_each_output,
)
from pipelines.reports.representable import LeftOutFinding
from pipelines.result import (
    Diagnosis,
    DiagnosisLabel,
    EngineRuntime,
    FindingResult,
    ModelInfo,
    ReasonResult,
    StudyResult,
    StudyStatus,
    WithheldResult,
)
from pipelines.transforms import (
    PreprocessConfig,
    PreprocessedVolume,
    label_to_source,
    plan_reorientation,
    preprocess_volume,
)
from pipelines.volume import Volume

__all__ = [
    "DEFAULT_RELEASE",
    "MAX_KEY_IMAGES",
    "EngineChoice",
    "LoadedModel",
    "PredictProgress",
    "PredictSummary",
    "StudyAnalysis",
    "internal_error_reason",
    "key_image_ids",
    "load_model",
    "predict_inputs",
    "release_files",
    "result_path",
    "tune_release",
]

log = logging.getLogger(__name__)

#: The release ``basira predict`` uses when ``--model`` is not given (relative to the cwd).
DEFAULT_RELEASE = Path("models/lung-nodule-unet/release")
#: At most this many key images per study; the JSON, SEG, SR and FHIR carry every finding.
MAX_KEY_IMAGES = 5
_SAFE_UID = re.compile(r"^[0-9A-Za-z.\-]{1,64}$")
_CONCLUSION_TEXT = {
    DiagnosisLabel.TUMOUR_SUSPECTED: "tumour suspected",
    DiagnosisLabel.NO_TUMOUR_SUSPECTED: "no tumour suspected",
}


class PredictProgress(Protocol):
    """Told the number of studies once, then each result as it is written (a progress bar)."""

    def start(self, total: int) -> None: ...

    def advance(self, result: StudyResult) -> None: ...


@dataclass(frozen=True)
class LoadedModel:
    """A verified release with its engine and calibration, loaded once per batch; ``runtime``
    says which engine runs it, on which CPU, and how it was chosen."""

    bundle: Bundle
    engine: Engine
    calibration: BundleCalibration
    info: ModelInfo
    runtime: EngineRuntime

    @property
    def operating_point(self) -> float:
        return self.calibration.operating_point.threshold


def load_model(release_dir: Path, choice: EngineChoice | None = None) -> LoadedModel:
    """Verify the release folder, load its calibration and the engine ``choice`` asks for (by
    default the fastest on this host as measured now, :func:`~pipelines.engine.chooser.
    choose_engine`).

    Raises:
        ConfigError: ``providers`` with the torch engine, or a provider that is not installed.
        ModelNotFoundError: the folder holds no release.
        ModelIntegrityError: a file does not match its checksum.
        ModelError: the release has no calibration (outputs only show calibrated numbers), or no
            engine can run it.
        and whatever :func:`~pipelines.engine.load_engine` raises.
    """
    bundle = _verified(release_dir)
    calibration = load_calibration(release_dir, bundle)
    if calibration is None:
        raise ModelError(
            f"The release at {release_dir} has no calibration: its scores are not "
            "probabilities and are never shown. Release a calibrated bundle.",
            path=str(release_dir),
        )
    chosen = choose_engine(bundle, release_files(release_dir, bundle), choice or EngineChoice())
    info = ModelInfo(
        name=bundle.name,
        version=bundle.version,
        onnx_sha256=bundle.checksums[ONNX_FILE],
        engine=chosen.runtime.chosen.engine,
    )
    return LoadedModel(bundle, chosen.engine, calibration, info, chosen.runtime)


def tune_release(release_dir: Path, choice: EngineChoice) -> EngineRuntime:
    """Time the engines that can run the release on this host now and cache the fastest in
    ``choice.cache`` (``basira models tune``); an earlier cached choice is measured again.

    Raises:
        ModelNotFoundError, ModelIntegrityError: as :func:`load_model`.
        ConfigError: a named provider is not installed, or ``choice`` pins a backend (there is
            nothing to measure).
        ModelError: no engine can run the release.
    """
    if choice.kind != AUTO:
        raise ConfigError(
            f"--engine {choice.kind} pins the engine: there is nothing to measure. Tune with "
            "--engine auto, optionally with --threads or --providers.",
            engine=choice.kind,
        )
    bundle = _verified(release_dir)
    files = release_files(release_dir, bundle)
    return choose_engine(bundle, files, choice, remeasure=True).runtime


def release_files(release_dir: Path, bundle: Bundle) -> ModelFiles:
    """The release's ONNX model and torch weights (each ``None`` when the release lacks it) and
    the digests that identify them for the engine choice cache."""
    names = (ONNX_FILE, WEIGHTS_FILE)
    onnx, weights = ((release_dir / n if (release_dir / n).is_file() else None) for n in names)
    return ModelFiles(onnx, weights, tuple(bundle.checksums.get(n, "") for n in names))


def _verified(release_dir: Path) -> Bundle:
    if not (release_dir / BUNDLE_FILE).is_file() or not (release_dir / SUMS_FILE).is_file():
        raise ModelNotFoundError(
            f"No model release at {release_dir} (no {BUNDLE_FILE} and {SUMS_FILE}): install the "
            "release there or name one with --model.",
            path=str(release_dir),
        )
    return verify_release(release_dir)


@dataclass
class PredictSummary:
    """What a batch produced: one result (and its JSON path) per study, plus refused files."""

    results: list[StudyResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    n_rejected_files: int = 0

    @property
    def any_failed(self) -> bool:
        return any(r.status is StudyStatus.FAILED for r in self.results)


def predict_inputs(
    paths: Sequence[Path],
    release_dir: Path,
    out_dir: Path,
    formats: Iterable[OutputFormat | str] = (),
    *,
    engine: EngineChoice | None = None,
    progress: PredictProgress | None = None,
) -> PredictSummary:
    """Analyse every study under ``paths`` and write its results into ``out_dir``.

    ``formats`` are written besides the JSON (:class:`~pipelines.reports.OutputFormat`);
    ``engine`` says how the engine is chosen (default: the fastest on this host as measured
    when the model loads, nothing cached);
    ``progress`` hears the number of studies, then each result.

    Raises:
        InputNotFoundError: a named path does not exist.
        NoDicomFoundError: nothing under ``paths`` was readable DICOM (CLI exit 3).
        ModelNotFoundError, ModelIntegrityError, ModelError: the model cannot be used.
    """
    wanted = frozenset(OutputFormat(f) for f in formats)
    model = load_model(release_dir, engine)
    with tempfile.TemporaryDirectory(prefix="basira-predict-") as workdir:
        index = index_inputs(list(paths), workdir=Path(workdir))
        if not index.studies:
            raise NoDicomFoundError(
                f"Nothing readable as DICOM under {', '.join(str(p) for p in paths)} "
                f"({len(index.rejected_files)} files refused).",
                n_rejected=len(index.rejected_files),
            )
        analysis = StudyAnalysis(model, out_dir, wanted)
        summary = PredictSummary(n_rejected_files=len(index.rejected_files))
        if progress is not None:
            progress.start(len(index.studies))
        for result in analysis.run(index.studies):
            summary.results.append(result)
            summary.paths.append(result_path(out_dir, result.study_instance_uid))
            if progress is not None:
                progress.advance(result)
    return summary


def result_path(out_dir: Path, study_instance_uid: str) -> Path:
    """``<out_dir>/<StudyInstanceUID>.json`` (a UID that is not file-name safe is hashed)."""
    name = study_instance_uid
    if not _SAFE_UID.match(name):
        name = "study-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return out_dir / f"{name}.json"


@dataclass(frozen=True)
class _Inferred:
    """What the analysis of one study found: the diagnosis, the findings every output shows,
    and what the outputs leave out."""

    diagnosis: Diagnosis
    findings: list[FindingResult]
    withheld: list[WithheldResult]


@dataclass(frozen=True)
class _Read:
    """One study's selected series as read in the prefetch thread (or why it could not be)."""

    volume: Volume | None = None
    headers: list[Dataset] = field(default_factory=list)
    body_part: str = ""
    error: BaseException | None = None
    ms: float = 0.0


class StudyAnalysis:
    """Runs the per-study pipeline over studies with a loaded model (one slot read-ahead)."""

    def __init__(
        self,
        model: LoadedModel,
        out_dir: Path,
        formats: frozenset[OutputFormat] = frozenset(),
        *,
        limits: IntendedUseLimits | None = None,
        read_policy: ReadPolicy | None = None,
    ) -> None:
        self.model = model
        self.out_dir = out_dir
        self.formats = formats
        self.limits = limits or IntendedUseLimits()
        self.read_policy = read_policy

    def run(self, studies: Sequence[StudyEntry]) -> Iterator[StudyResult]:
        """Analyse ``studies`` in order, yielding each result after its JSON is written."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="basira-read") as reader:
            pending: Future[_Read] | None = None
            for n, study in enumerate(studies):
                current = pending or reader.submit(self._read, study)
                pending = (
                    reader.submit(self._read, studies[n + 1]) if n + 1 < len(studies) else None
                )
                result = self.analyse(study, current.result())
                result_path(self.out_dir, result.study_instance_uid).write_text(
                    result.to_json(), encoding="utf-8"
                )
                yield result

    def _read(self, study: StudyEntry) -> _Read:
        series = study.selected_series
        if series is None:
            return _Read()
        start = time.perf_counter()
        try:
            volume = read_series_volume(series, self.read_policy)
            headers = (
                read_source_headers([inst.path for inst in series.instances])
                if self.formats
                else []
            )
        except Exception as exc:  # reported by the analysing thread, as that study's result
            return _Read(error=exc, ms=_ms_since(start))
        body_part = series.instances[0].body_part_examined
        return _Read(volume, headers, body_part, ms=_ms_since(start))

    def analyse(self, study: StudyEntry, read: _Read) -> StudyResult:
        """The result of one study whose selected series was read into ``read``."""
        series = study.selected_series
        base: dict[str, object] = {
            "study_instance_uid": study.study_instance_uid,
            "series_instance_uid": series.series_instance_uid if series else None,
            "model": self.model.info,
            "runtime": self.model.runtime,
        }
        timings: dict[str, float] = {"read": read.ms}
        start = time.perf_counter()
        try:
            if series is None:
                return self._refused(base, _selection_reasons(study), timings)
            if read.error is not None:
                raise read.error
            if read.volume is None:
                raise RuntimeError("the selected series was not read")
            with _timed(timings, "intended_use"):
                reasons = check_intended_use(
                    read.volume,
                    self.model.bundle.intended_use,
                    body_part=read.body_part,
                    limits=self.limits,
                )
            if reasons:
                return self._refused(base, reasons, timings)
            inferred = self._infer(read.volume, read.headers, timings)
        except BasiraError as exc:
            status = StudyStatus.NOT_ANALYSABLE if exc.bad_input else StudyStatus.FAILED
            return self._refused(base, [Reason.from_error(exc)], timings, status)
        except Exception as exc:
            reason = internal_error_reason(exc)
            return self._refused(base, [reason], timings, StudyStatus.FAILED)
        timings["total"] = timings["read"] + _ms_since(start)
        return StudyResult.model_validate(
            {
                **base,
                "status": StudyStatus.COMPLETED,
                "diagnosis": inferred.diagnosis,
                "findings": inferred.findings,
                "withheld": inferred.withheld,
                "timings_ms": timings,
            }
        )

    def _infer(
        self, volume: Volume, headers: list[Dataset], timings: dict[str, float]
    ) -> _Inferred:
        bundle = self.model.bundle
        _require_one_model_voxel(volume, bundle.preprocess)
        with _timed(timings, "preprocess"):
            pre = preprocess_volume(volume, bundle.preprocess)
        with _timed(timings, "inference"):
            prob = self.model.engine.predict(pre.array)
        with _timed(timings, "findings"):
            found, labels = extract_findings_with_mask(prob, pre.affine_lps, bundle.findings)
            found, probability = apply_calibration(found, self.model.calibration)
            found = [_to_source(finding, pre) for finding in found]
            diagnosis = self._diagnosis(probability)
            shown = representable_findings(found, label_to_source(labels, pre.geometry))
        withheld = [_left_out_result(item) for item in shown.left_out]
        if self.formats:
            with _timed(timings, "outputs"):
                outputs = self._write_outputs(
                    volume, headers, shown.mask_kji, shown.findings, diagnosis
                )
            withheld += [_withheld_output_result(item) for item in outputs]
        findings = [_finding_result(finding, volume) for finding in shown.findings]
        return _Inferred(diagnosis, findings, withheld)

    def _diagnosis(self, probability: float) -> Diagnosis:
        threshold = self.model.operating_point
        label = (
            DiagnosisLabel.TUMOUR_SUSPECTED
            if probability >= threshold
            else DiagnosisLabel.NO_TUMOUR_SUSPECTED
        )
        return Diagnosis(label=label, probability=probability, operating_point=threshold)

    def _write_outputs(
        self,
        volume: Volume,
        headers: list[Dataset],
        mask: np.ndarray,
        found: list[Finding],
        diagnosis: Diagnosis,
    ) -> list[WithheldOutput]:
        info = self.model.info
        study = AnalysedStudy(
            volume=volume,
            source_headers=headers,
            findings_mask=mask,
            findings=found,
            algorithm=AlgorithmInfo(info.name, info.version),
            conclusion=StudyConclusion(
                label=_CONCLUSION_TEXT[diagnosis.label],
                probability=diagnosis.probability,
                operating_point=diagnosis.operating_point,
            ),
            key_image_ids=key_image_ids(found, self.model.calibration),
        )
        return write_each_output(study, self.out_dir, self.formats).withheld

    @staticmethod
    def _refused(
        base: Mapping[str, object],
        reasons: Sequence[Reason],
        timings: dict[str, float],
        status: StudyStatus = StudyStatus.NOT_ANALYSABLE,
    ) -> StudyResult:
        timings["total"] = sum(timings.values())
        return StudyResult.model_validate(
            {
                **base,
                "status": status,
                "reasons": [ReasonResult(code=r.code, message=r.message) for r in reasons],
                "timings_ms": timings,
            }
        )


def internal_error_reason(exc: BaseException, *, context: str = "analysis") -> Reason:
    """The reason a study's analysis stopped on an unexpected error of ours.

    Users get the one documented code (``predict.failed``) and a plain sentence; the
    exception itself, whose text may quote file names or UIDs, goes only to the log, with its
    traceback, on the line ``<context> stopped: unexpected error <id>``, the id being the one
    the sentence names.
    """
    error_id = uuid.uuid4().hex[:12]
    log.error("%s stopped: unexpected error %s", context, error_id, exc_info=exc)
    return Reason(
        PredictionFailedError.code,
        "The analysis stopped on an unexpected error of ours, not of the study; it was logged "
        f"as error {error_id}. Report that id to the operator of the service.",
    )


def key_image_ids(found: Sequence[Finding], calibration: BundleCalibration) -> frozenset[int]:
    """The findings that get a key image: those that on their own reach the operating point,
    the best :data:`MAX_KEY_IMAGES` of them.

    The study probability is the study calibrator applied to the best finding's score, so a
    finding reaches the operating point when its own score, through that calibrator, does. A
    study labelled tumour suspected thus always shows its best finding, and one labelled
    otherwise gets no key image: weak findings stay in the SEG, SR, FHIR and JSON, where a
    reader can look for them, instead of filling the PACS with pictures.
    """
    if not found:
        return frozenset()
    scores = np.array([finding.score for finding in found], dtype=np.float64)
    reach = calibration.study.apply(scores) >= calibration.operating_point.threshold
    ranked = sorted(
        (finding for finding, ok in zip(found, reach, strict=True) if ok),
        key=lambda finding: -finding.score,
    )
    return frozenset(finding.id for finding in ranked[:MAX_KEY_IMAGES])


def _to_source(finding: Finding, pre: PreprocessedVolume) -> Finding:
    """``finding`` with ``center_ijk`` as a source voxel index (extracted on the model grid)."""
    source = pre.geometry.output_to_source_ijk(np.asarray(finding.center_ijk, float))
    return replace(finding, center_ijk=(float(source[0]), float(source[1]), float(source[2])))


def _require_one_model_voxel(volume: Volume, preprocess: PreprocessConfig) -> None:
    """Refuse a series narrower than one voxel of the model's grid along an axis (its extent:
    voxels times spacing, on the axis it is reoriented to), which resampling cannot turn into
    any network input.

    Raises:
        SeriesTooSmallError: the series is too small for the model (not analysable).
    """
    axes, _ = plan_reorientation(volume.affine_lps, preprocess.orientation)
    source_mm = [n * s for n, s in zip(volume.shape[::-1], volume.spacing_mm, strict=True)]
    extent_mm = [source_mm[axes[n]] for n in range(3)]
    grid_mm = preprocess.target_spacing_mm
    short = [n for n in range(3) if extent_mm[n] < grid_mm[n]]
    if short:
        raise SeriesTooSmallError(
            f"The series spans {', '.join(f'{e:.1f}' for e in extent_mm)} mm, less than one "
            f"voxel of the model's {tuple(grid_mm)} mm grid along "
            f"{'/'.join('ijk'[n] for n in short)}: it cannot be analysed.",
            extent_mm=[round(e, 2) for e in extent_mm],
            model_spacing_mm=list(grid_mm),
        )


def _left_out_result(item: LeftOutFinding) -> WithheldResult:
    return WithheldResult(code=item.code, message=item.message, finding_id=item.finding.id)


def _withheld_output_result(item: WithheldOutput) -> WithheldResult:
    return WithheldResult(code=item.code, message=item.message, output=item.output.value)


def _finding_result(finding: Finding, volume: Volume) -> FindingResult:
    k = float(volume.lps_to_ijk(np.asarray(finding.center_lps_mm))[2])
    nearest = int(np.clip(round(k), 0, volume.shape[0] - 1))
    return FindingResult(
        id=finding.id,
        center_lps_mm=finding.center_lps_mm,
        center_ijk=finding.center_ijk,
        diameter_mm=finding.diameter_mm,
        volume_ml=finding.volume_ml,
        confidence=float(finding.confidence if finding.confidence is not None else 0.0),
        referenced_sop_instance_uid=volume.provenance.sop_instance_uids[nearest],
    )


def _selection_reasons(study: StudyEntry) -> list[Reason]:
    """Why no series of ``study`` was selected: every series' reasons, without repeats."""
    seen: dict[tuple[str, str], Reason] = {}
    for series in study.series:
        for reason in series.reasons:
            seen.setdefault((reason.code, reason.message), reason)
    return list(seen.values()) or [Reason("input.no_dicom", "The study holds no image series.")]


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = _ms_since(start)


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
