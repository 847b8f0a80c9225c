"""``basira export``: a trained network to one ONNX file whose parity with torch is proven.

The exported graph takes ``[batch, 1, k, j, i]`` windows of the bundle's ``roi_size_kji`` (batch
dynamic, spatial axes fixed: the engine only ever feeds windows of that size) and returns logits
of the same shape. It is written as one file (no external data) with :class:`OnnxModelInfo`
metadata: model name and version, preprocessing hash, roi size, the weights' SHA-256, opset.

Parity is proven before the file is written: seeded random windows through torch and ONNX Runtime
(one at a time and as one batch, which also exercises the dynamic axis) must agree within
``tolerance`` on probabilities, and optionally a small whole volume through both engines. Then
graph-optimisation levels and reduced precision are measured, and a variant is kept only if it
is faster *and* agrees (see docs/export.md). ``<model>.export.json`` records what was measured.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from pydantic import BaseModel, ConfigDict, Field

from pipelines.bundle import BUNDLE_FILE, Bundle, load_bundle, preprocessing_hash, sha256_file
from pipelines.cpu import CpuInfo, cpu_info
from pipelines.engine import Engine, load_onnx_engine, load_torch_engine
from pipelines.engine.onnx_engine import (
    GraphOptimization,
    OnnxModelInfo,
    OrtSession,
    Precision,
    quantize_int8,
    to_float16,
)
from pipelines.engine.torch_engine import TorchEngine
from pipelines.errors import ExportError, ExportParityError
from pipelines.findings import FindingsConfig, extract_findings

if TYPE_CHECKING:
    from torch import nn

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: Warnings the TorchScript exporter always gives for MONAI's UNet; none changes the graph
#: (instance norm uses per-instance statistics in both modes; shape checks trace as constants
#: because the spatial axes are fixed).
_EXPORTER_NOISE = (
    r".*legacy TorchScript-based ONNX export.*",
    r".*feature will be removed.*",
    r".*instance_norm.*",
    r".*Converting a tensor to a Python boolean.*",
)


class ExportConfig(BaseModel):
    """How ``basira export`` exports and what it proves (see docs/export.md).

    ``tolerance`` bounds the max absolute probability difference torch vs ONNX Runtime for the
    fp32 model; ``reduced_precision_tolerance`` the same for fp16/int8 variants, which are kept
    only when ``min_speedup`` times faster than the best fp32 configuration.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    opset: int = Field(default=17, ge=17)
    tolerance: float = Field(default=1e-4, gt=0)
    parity_patches: int = Field(default=4, ge=1)
    seed: int = 0
    try_variants: bool = True
    min_speedup: float = Field(default=1.1, ge=1.0)
    reduced_precision_tolerance: float = Field(default=5e-3, gt=0)
    timing_repeats: int = Field(default=5, ge=1)
    check_volume: bool = False


class VariantResult(BaseModel):
    """One measured configuration: its speed relative to ``baseline`` and its agreement."""

    graph_optimization: GraphOptimization
    precision: Precision
    baseline: str
    seconds_median: float | None = None
    speedup: float | None = None
    max_abs_diff: float | None = None
    tolerance: float
    kept: bool = False
    error: str | None = None

    @property
    def name(self) -> str:
        """``<precision>/<level>``, e.g. ``fp32/all``."""
        return f"{self.precision.value}/{self.graph_optimization.value}"

    @property
    def qualifies(self) -> bool:
        """Agrees within its tolerance (speed is judged by the caller)."""
        return self.error is None and (self.max_abs_diff or 0.0) <= self.tolerance


class VolumeParity(BaseModel):
    """Whole-volume check: TorchEngine vs OnnxEngine on one seeded volume."""

    shape_kji: tuple[int, int, int]
    max_abs_diff: float
    tolerance: float
    findings_torch: int
    findings_onnx: int
    mask_voxels_differing: int


class ExportReport(BaseModel):
    """``<model>.export.json``: what was exported, proven and measured."""

    model_path: str
    onnx_sha256: str
    info: OnnxModelInfo
    patch_max_abs_diff: float
    variants: list[VariantResult] = Field(default_factory=list)
    volume: VolumeParity | None = None
    #: the CPU the variants were timed on (``None`` in reports written before it was recorded).
    cpu: CpuInfo | None = None


def random_patches(roi_size_kji: Sequence[int], n: int, seed: int) -> np.ndarray:
    """``[n, 1, k, j, i]`` float32 windows, uniform in ``[0, 1]`` (the preprocessed range)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, *roi_size_kji), dtype=np.float32)


def torch_probabilities(network: nn.Module, patches: np.ndarray) -> np.ndarray:
    """Sigmoid of ``network`` on ``patches`` ``[n, 1, k, j, i]``, one patch at a time."""
    network.eval()
    with torch.inference_mode():
        logits = [network(torch.from_numpy(p[None])) for p in patches]
    return torch.sigmoid(torch.cat(logits)).numpy()


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(torch.sigmoid(torch.from_numpy(logits)).numpy())


def session_difference(session: OrtSession, patches: np.ndarray, reference: np.ndarray) -> float:
    """Max abs probability difference of ``session`` vs ``reference`` on ``patches``, run one at
    a time (batch 1) and as one batch (the dynamic axis)."""
    single = np.concatenate([session.run(p[None]) for p in patches])
    batched = session.run(patches)
    return max(float(np.abs(_sigmoid(out) - reference).max()) for out in (single, batched))


def check_patch_parity(
    network: nn.Module, model: bytes | Path, roi_size_kji: Sequence[int], config: ExportConfig
) -> float:
    """Prove that ``model`` (ONNX) computes what ``network`` does on seeded random windows.

    Returns:
        The max absolute probability difference measured.

    Raises:
        ExportParityError: the difference exceeds ``config.tolerance``.
    """
    patches = random_patches(roi_size_kji, config.parity_patches, config.seed)
    diff = session_difference(OrtSession(model), patches, torch_probabilities(network, patches))
    if not diff <= config.tolerance:  # NaN fails too
        raise ExportParityError(
            f"ONNX Runtime differs from torch by {diff:.3g} on {config.parity_patches} seeded "
            f"patches (tolerance {config.tolerance:g}); the ONNX file was not written.",
            check="patches",
            max_abs_diff=diff,
            tolerance=config.tolerance,
        )
    return diff


def trace_to_onnx(network: nn.Module, roi_size_kji: Sequence[int], opset: int) -> onnx.ModelProto:
    """``network`` as a checked ONNX graph: dynamic batch, spatial axes fixed to the roi size.

    Uses the TorchScript exporter (the dynamo exporter needs ``onnxscript``; both give the same
    parity, BASELINES.md).

    Raises:
        ExportError: the graph does not pass ``onnx.checker``.
    """
    example = torch.zeros((1, 1, *roi_size_kji), dtype=torch.float32)
    network.eval()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        graph = Path(folder, "graph.onnx")
        for pattern in _EXPORTER_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            network,
            (example,),
            graph,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        model = onnx.load(graph)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"The exported graph is not valid ONNX: {exc}", opset=opset) from exc
    return model


def with_metadata(model: onnx.ModelProto, info: OnnxModelInfo) -> onnx.ModelProto:
    """``model`` with its Basira metadata replaced by ``info``'s."""
    kept = {p.key: p.value for p in model.metadata_props if not p.key.startswith("basira.")}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**kept, **info.to_metadata()})
    return model


def _timed_runs(sessions: Sequence[OrtSession], batch: np.ndarray, repeats: int) -> list[float]:
    """Median seconds per run of each session on ``batch``, runs interleaved (after a warm-up)
    so that load on a shared machine falls on every session alike."""
    times: list[list[float]] = [[] for _ in sessions]
    for session in sessions:
        session.run(batch)
    for _ in range(repeats):
        for slot, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(batch)
            times[slot].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


@dataclass(frozen=True)
class VariantChoice:
    """Every measured variant, and the model bytes, level and precision that were kept."""

    results: list[VariantResult]
    model: bytes
    graph_optimization: GraphOptimization
    precision: Precision


def _failed(result: VariantResult, exc: Exception) -> VariantResult:
    return result.model_copy(update={"error": f"{type(exc).__name__}: {exc}"})


def _measure(
    candidates: Sequence[tuple[VariantResult, bytes]],
    baseline: OrtSession,
    parity: tuple[np.ndarray, np.ndarray],
    timing_batch: np.ndarray,
    repeats: int,
) -> list[VariantResult]:
    """Agreement (on the ``(patches, reference probabilities)`` of ``parity``) and speed
    relative to ``baseline`` of each candidate; one that cannot run is recorded with its error."""
    loaded: list[tuple[VariantResult, OrtSession]] = []
    broken: list[VariantResult] = []
    for result, model in candidates:
        try:
            session = OrtSession(model, graph_optimization=result.graph_optimization)
            diff = session_difference(session, *parity)
        except Exception as exc:  # the report says why; the variant is simply not kept
            broken.append(_failed(result, exc))
            continue
        loaded.append((result.model_copy(update={"max_abs_diff": diff}), session))
    medians = _timed_runs([baseline, *(s for _, s in loaded)], timing_batch, repeats)
    timed = [
        result.model_copy(
            update={"seconds_median": seconds, "speedup": medians[0] / max(seconds, 1e-12)}
        )
        for (result, _), seconds in zip(loaded, medians[1:], strict=True)
    ]
    return timed + broken


def _best(results: Sequence[VariantResult], min_speedup: float) -> VariantResult | None:
    """The fastest result that agrees within its tolerance and is ``min_speedup`` times faster."""
    fit = [r for r in results if r.qualifies and (r.speedup or 0.0) >= min_speedup]
    return max(fit, key=lambda r: r.speedup or 0.0, default=None)


def _reduced_precision(
    model: bytes, level: GraphOptimization, config: ExportConfig
) -> tuple[list[tuple[VariantResult, bytes]], list[VariantResult]]:
    """fp16 and int8 versions of ``model`` to measure, and the conversions that failed."""
    converters: dict[Precision, Callable[[bytes], bytes]] = {
        Precision.FP16: to_float16,
        Precision.INT8: quantize_int8,
    }
    converted: list[tuple[VariantResult, bytes]] = []
    failed: list[VariantResult] = []
    for precision, convert in converters.items():
        result = VariantResult(
            graph_optimization=level,
            precision=precision,
            baseline=f"fp32/{level.value}",
            tolerance=config.reduced_precision_tolerance,
        )
        try:
            converted.append((result, convert(model)))
        except Exception as exc:  # recorded in the report; fp32 stays
            failed.append(_failed(result, exc))
    return converted, failed


def choose_variant(
    model: bytes,
    parity: tuple[np.ndarray, np.ndarray],
    timing_batch: np.ndarray,
    config: ExportConfig,
) -> VariantChoice:
    """Measure the graph levels against the unoptimised graph, then fp16 and int8 against the
    best fp32 level; keep the fastest that agrees and is ``config.min_speedup`` times faster."""
    plain = GraphOptimization.DISABLE
    levels = [
        VariantResult(
            graph_optimization=level,
            precision=Precision.FP32,
            baseline=f"fp32/{plain.value}",
            tolerance=config.tolerance,
        )
        for level in (GraphOptimization.BASIC, GraphOptimization.EXTENDED, GraphOptimization.ALL)
    ]
    fp32 = _measure(
        [(r, model) for r in levels],
        OrtSession(model, graph_optimization=plain),
        parity,
        timing_batch,
        config.timing_repeats,
    )
    best = _best(fp32, config.min_speedup)
    level = best.graph_optimization if best else plain
    converted, failed = _reduced_precision(model, level, config)
    low = _measure(
        converted,
        OrtSession(model, graph_optimization=level),
        parity,
        timing_batch,
        config.timing_repeats,
    )
    winner = _best(low, config.min_speedup)
    kept = winner or best
    results = [r.model_copy(update={"kept": r is kept}) for r in (*fp32, *low, *failed)]
    kept_model = next(
        (m for r, m in converted if winner and r.precision == winner.precision), model
    )
    precision = winner.precision if winner else Precision.FP32
    return VariantChoice(results, kept_model, level, precision)


def parity_volume(roi_size_kji: Sequence[int], seed: int) -> np.ndarray:
    """A seeded ``[k, j, i]`` volume 1.5 times the roi per axis: several overlapping windows, so
    the check covers the window grid and the blending too."""
    shape = tuple(math.ceil(1.5 * s) for s in roi_size_kji)
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def check_volume_parity(
    torch_engine: TorchEngine,
    onnx_engine: Engine,
    image_kji: np.ndarray,
    *,
    tolerance: float,
    findings: FindingsConfig,
) -> VolumeParity:
    """Run both engines on ``image_kji`` and compare the probability maps and their findings.

    A map difference within ``tolerance`` bounds every finding's score shift by it and can change
    the mask only at voxels within ``tolerance`` of the findings threshold.

    Raises:
        ExportParityError: the maps differ by more than ``tolerance``.
    """
    expected, found = torch_engine.predict(image_kji), onnx_engine.predict(image_kji)
    diff = float(np.abs(expected - found).max())
    if not diff <= tolerance:
        raise ExportParityError(
            f"On a {list(image_kji.shape)} volume the ONNX engine differs from the torch engine "
            f"by {diff:.3g} (tolerance {tolerance:g}).",
            check="volume",
            max_abs_diff=diff,
            tolerance=tolerance,
        )
    affine = np.eye(4)
    return VolumeParity(
        shape_kji=image_kji.shape,
        max_abs_diff=diff,
        tolerance=tolerance,
        findings_torch=len(extract_findings(expected, affine, findings)),
        findings_onnx=len(extract_findings(found, affine, findings)),
        mask_voxels_differing=int(
            np.count_nonzero((expected >= findings.threshold) != (found >= findings.threshold))
        ),
    )


def report_path(model_path: Path) -> Path:
    """Where the export report of ``model_path`` goes: ``model.onnx`` → ``model.export.json``."""
    return model_path.with_suffix(".export.json")


def _model_info(
    bundle: Bundle, weights: Path, config: ExportConfig, patch_diff: float, choice: VariantChoice
) -> OnnxModelInfo:
    kept = next((r for r in choice.results if r.kept), None)
    return OnnxModelInfo(
        model_name=bundle.name,
        model_version=bundle.version,
        network=bundle.network.name,
        preprocessing_hash=preprocessing_hash(bundle),
        roi_size_kji=bundle.inference.roi_size_kji,
        weights_sha256=sha256_file(weights),
        opset=config.opset,
        exporter=f"torch {torch.__version__} torchscript",
        parity_max_abs_diff=kept.max_abs_diff
        if kept and kept.max_abs_diff is not None
        else patch_diff,
        parity_tolerance=kept.tolerance if kept else config.tolerance,
        graph_optimization=choice.graph_optimization,
        precision=choice.precision,
    )


def _choose(
    model: bytes, network: nn.Module, bundle: Bundle, config: ExportConfig
) -> VariantChoice:
    """The measured variant choice, or the plain model at ONNX Runtime's default level."""
    if not config.try_variants:
        return VariantChoice([], model, GraphOptimization.ALL, Precision.FP32)
    roi = bundle.inference.roi_size_kji
    patches = random_patches(roi, config.parity_patches, config.seed)
    timing_batch = random_patches(roi, bundle.inference.sw_batch_size, config.seed + 1)
    parity = (patches, torch_probabilities(network, patches))
    return choose_variant(model, parity, timing_batch, config)


def _volume_check(
    bundle: Bundle,
    torch_engine: TorchEngine,
    info: OnnxModelInfo,
    config: ExportConfig,
    model_path: Path,
) -> VolumeParity:
    onnx_engine = load_onnx_engine(bundle, model_path)
    image = parity_volume(bundle.inference.roi_size_kji, config.seed)
    return check_volume_parity(
        torch_engine, onnx_engine, image, tolerance=info.parity_tolerance, findings=bundle.findings
    )


def _write_proven(
    model: bytes,
    info: OnnxModelInfo,
    out: Path,
    volume_check: Callable[[Path], VolumeParity] | None,
) -> VolumeParity | None:
    """Write ``model`` with ``info`` as one file; it becomes ``out`` only once ``volume_check``
    (if given) passed on it, so a refused export leaves nothing behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(out.name + ".partial")
    try:
        onnx.save_model(
            with_metadata(onnx.load_from_string(model), info), staged, save_as_external_data=False
        )
        volume = volume_check(staged) if volume_check is not None else None
        staged.replace(out)
    finally:
        staged.unlink(missing_ok=True)
    return volume


def export_model(
    bundle_path: Path, weights: Path, out: Path, config: ExportConfig | None = None
) -> ExportReport:
    """Export ``weights`` of the bundle's network to ``out`` (one ONNX file) and write
    ``<out>.export.json``; nothing is written unless parity holds.

    Raises:
        InputNotFoundError: the bundle or weights file does not exist.
        ConfigError: the bundle does not validate.
        CheckpointMismatchError: the weights belong to another network.
        ExportError: the exported graph is not valid ONNX.
        ExportParityError: ONNX Runtime disagrees with torch beyond the tolerance.
    """
    config = config or ExportConfig()
    bundle = load_bundle(bundle_path / BUNDLE_FILE if bundle_path.is_dir() else bundle_path)
    torch_engine = load_torch_engine(bundle, weights)
    network, roi = torch_engine.network, bundle.inference.roi_size_kji
    model = trace_to_onnx(network, roi, config.opset).SerializeToString()
    patch_diff = check_patch_parity(network, model, roi, config)
    choice = _choose(model, network, bundle, config)
    info = _model_info(bundle, weights, config, patch_diff, choice)
    check = partial(_volume_check, bundle, torch_engine, info, config)
    volume = _write_proven(choice.model, info, out, check if config.check_volume else None)
    report = ExportReport(
        model_path=str(out),
        onnx_sha256=sha256_file(out),
        info=info,
        patch_max_abs_diff=patch_diff,
        variants=choice.results,
        volume=volume,
        cpu=cpu_info(),
    )
    report_path(out).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report
