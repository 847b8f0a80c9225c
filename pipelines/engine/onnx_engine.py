"""The ONNX Runtime engine: the serving default, and the one module that imports ``onnxruntime``.

:class:`OnnxEngine` runs an exported model (``basira export``) through
:class:`~pipelines.engine.sliding_window.SlidingWindow` with a predictor that calls ONNX Runtime
on numpy windows, so the lung crop, the window grid, the Gaussian blending and the stitching are
the very code the torch engine runs, and serving imports neither torch nor MONAI. Memory stays
bounded: only ``sw_batch_size`` windows at a time go through the session; the volume and the
stitched output live on the CPU.

The model carries its provenance as ONNX metadata (:class:`OnnxModelInfo`); the engine refuses a
model whose preprocessing hash differs from the bundle's. Execution providers: TensorRT, then
CUDA, then OpenVINO, then ONNX Runtime's own CPU kernels, as far as the installed ``onnxruntime``
offers them. On x86-64 Linux the project installs ``onnxruntime-openvino`` for its OpenVINO CPU
kernels (how they compare with ONNX Runtime's own and with torch on each CPU:
``benchmarks/RESULTS.md``); it is pinned to float32 so its outputs stay within the export's
parity tolerance. The reduced-precision
converters that ``basira export`` tries (:func:`to_float16`, :func:`quantize_int8`) live here too,
so nothing else imports ``onnxruntime``.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.bundle import Bundle, InferenceConfig, preprocessing_hash
from pipelines.engine.sliding_window import SlidingWindow
from pipelines.errors import ConfigError, ModelMismatchError, ModelUnreadableError
from pipelines.transforms import PreprocessConfig

log = logging.getLogger(__name__)

#: Every Basira key in the ONNX ``metadata_props`` starts with this.
METADATA_PREFIX = "basira."
#: Providers in order of preference; only those the installed runtime offers are used.
OPENVINO = "OpenVINOExecutionProvider"
PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    OPENVINO,
    "CPUExecutionProvider",
)
#: OpenVINO's options (:func:`provider_entries`): the CPU device, float32.
OPENVINO_OPTIONS = {"device_type": "CPU", "precision": "FP32"}


class GraphOptimization(StrEnum):
    """ONNX Runtime graph optimisation levels (``disable`` runs the exported graph as is)."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class Precision(StrEnum):
    """Numeric precision of the weights and activations of an exported model."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


#: The session option that lets idle intra-op threads busy-wait.
_SPIN_KEY = "session.intra_op.allow_spinning"
_ORT_LEVELS = {
    GraphOptimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    GraphOptimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    GraphOptimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    GraphOptimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class OnnxModelInfo(BaseModel):
    """What ``basira export`` records in the model's metadata: where it came from, how to run it.

    ``roi_size_kji`` is the fixed spatial input shape (the batch axis is dynamic);
    ``graph_optimization`` and ``precision`` are the variant the exporter kept (see
    docs/export.md); ``parity_max_abs_diff`` is the measured torch-vs-ORT probability difference.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    model_version: str
    network: str
    preprocessing_hash: str
    roi_size_kji: tuple[int, int, int]
    weights_sha256: str
    opset: int
    exporter: str
    parity_max_abs_diff: float
    parity_tolerance: float
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    precision: Precision = Precision.FP32

    def to_metadata(self) -> dict[str, str]:
        """``basira.<field>`` → string, as ONNX ``metadata_props`` hold them."""
        return {
            f"{METADATA_PREFIX}{key}": value if isinstance(value, str) else json.dumps(value)
            for key, value in self.model_dump(mode="json").items()
        }

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> OnnxModelInfo | None:
        """Parse :meth:`to_metadata`'s keys; ``None`` when the model carries no complete Basira
        metadata (an older or hand-edited model is refused as not made for the bundle)."""
        fields: dict[str, Any] = {}
        for key, text in props.items():
            name = key.removeprefix(METADATA_PREFIX)
            if name == key or name not in cls.model_fields:
                continue
            # numbers parse from their text; the one list field is JSON
            fields[name] = json.loads(text) if name == "roi_size_kji" else text
        try:
            return cls.model_validate(fields)
        except ValidationError:
            return None


class OnnxEngineConfig(BaseModel):
    """How the ONNX engine runs; the service's settings embed it.

    Args:
        providers: execution providers to use, in order; ``None``: TensorRT, CUDA, OpenVINO,
            CPU as far as installed (:func:`select_providers`).
        threads: CPU threads for the network (``None``: the runtime's default, one per core);
            ONNX Runtime's intra-op threads and OpenVINO's inference threads alike.
        spin_wait: let idle ONNX Runtime intra-op threads busy-wait for the next operator (its
            own default): faster on a quiet machine, slower when the cores are busy with other
            work, so turn it off on such a server (measured in ``benchmarks/RESULTS.md``).
            OpenVINO schedules its own threads and ignores it.
        graph_optimization: ``None`` uses the level the exporter kept (model metadata).
        tta_flip_axes: test-time augmentation: every combination of flips over these spatial
            axes (0 = k, 1 = j, 2 = i) is run and the logits averaged; costs ``2 ** len`` times
            the network work. Empty (the default) turns it off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: tuple[str, ...] | None = None
    threads: int | None = Field(default=None, ge=1)
    spin_wait: bool = True
    graph_optimization: GraphOptimization | None = None
    tta_flip_axes: tuple[int, ...] = ()

    @field_validator("tta_flip_axes")
    @classmethod
    def _spatial_axes(cls, axes: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"tta_flip_axes must be distinct spatial axes 0, 1, 2; got {axes}")
        return axes


def select_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """The providers a session uses: ``requested`` (all must be available), else the preferred
    ones that are available (TensorRT, CUDA, OpenVINO, CPU).

    Raises:
        ConfigError: a requested provider is not offered by the installed runtime.
    """
    if requested is None:
        return [name for name in PREFERRED_PROVIDERS if name in available]
    missing = [name for name in requested if name not in available]
    if missing:
        raise ConfigError(
            f"Execution providers {missing} are not available; this onnxruntime offers "
            f"{list(available)}.",
            requested=list(requested),
            available=list(available),
        )
    return list(requested)


def provider_entries(providers: Sequence[str], threads: int | None) -> list[str | tuple[str, dict]]:
    """``providers`` as ``InferenceSession`` takes them, with the options Basira sets.

    OpenVINO runs on the CPU device in float32 with ``threads`` inference threads: its CPU plugin
    may otherwise pick bfloat16 on processors that have it, which moves probabilities far past
    the export's parity tolerance.
    """
    entries: list[str | tuple[str, dict]] = []
    for name in providers:
        if name == OPENVINO:
            options = dict(OPENVINO_OPTIONS)
            if threads is not None:
                options["num_of_threads"] = str(threads)
            entries.append((name, options))
        else:
            entries.append(name)
    return entries


class OrtSession:
    """One ONNX Runtime session over a one-input, one-output model: numpy batch in, logits out.

    Args:
        model: the ONNX file, or its serialised bytes.
        graph_optimization: the session's optimisation level.
        threads: intra-op threads (``None``: runtime default).
        spin_wait: whether idle intra-op threads busy-wait (see :class:`OnnxEngineConfig`).
        providers: execution providers (``None``: :func:`select_providers`).

    Raises:
        ModelUnreadableError: ONNX Runtime cannot load ``model``.
        ConfigError: a requested provider is not available.
    """

    def __init__(
        self,
        model: Path | bytes,
        *,
        graph_optimization: GraphOptimization = GraphOptimization.ALL,
        threads: int | None = None,
        spin_wait: bool = True,
        providers: Sequence[str] | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = _ORT_LEVELS[graph_optimization]
        options.log_severity_level = 3  # errors only: ORT warns about unused initialisers
        if threads is not None:
            options.intra_op_num_threads = threads
        options.add_session_config_entry(_SPIN_KEY, "1" if spin_wait else "0")
        chosen = select_providers(ort.get_available_providers(), providers)
        source = str(model) if isinstance(model, Path) else model
        try:
            self._session = ort.InferenceSession(
                source, options, providers=provider_entries(chosen, threads)
            )
        except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph/... errors
            where = str(model) if isinstance(model, Path) else "<bytes>"
            raise ModelUnreadableError(
                f"ONNX Runtime cannot load {where}: {exc}", path=where
            ) from exc
        dropped = [name for name in chosen if name not in self._session.get_providers()]
        if dropped:  # ONNX Runtime falls back when a provider cannot start, and only prints it
            log.warning(
                "execution providers %s could not start; running on %s",
                dropped,
                self._session.get_providers(),
            )
        self._input = self._session.get_inputs()[0].name
        self.graph_optimization = graph_optimization
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    @property
    def threads(self) -> int:
        """Intra-op threads the session was given (0: ONNX Runtime's default)."""
        return int(self._session.get_session_options().intra_op_num_threads)

    @property
    def spin_wait(self) -> bool:
        """Whether idle intra-op threads busy-wait."""
        options = self._session.get_session_options()
        return options.get_session_config_entry(_SPIN_KEY) == "1"

    @property
    def providers(self) -> list[str]:
        """The providers the session actually runs on, in priority order."""
        return list(self._session.get_providers())

    @property
    def info(self) -> OnnxModelInfo | None:
        """The Basira metadata of the model (``None`` for a model not made by ``basira export``)."""
        return OnnxModelInfo.from_metadata(self.metadata)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``[b, 1, k, j, i]`` float32 for a ``[b, 1, k, j, i]`` batch."""
        inputs = {self._input: np.ascontiguousarray(batch, dtype=np.float32)}
        return np.asarray(self._session.run(None, inputs)[0], dtype=np.float32)


def check_model_matches(info: OnnxModelInfo | None, bundle: Bundle, *, source: str) -> None:
    """Refuse a model made for another preprocessing contract than ``bundle``'s.

    Raises:
        ModelMismatchError: ``info`` is missing or its preprocessing hash differs.
    """
    expected = preprocessing_hash(bundle)
    found = info.preprocessing_hash if info is not None else None
    if found != expected:
        raise ModelMismatchError(
            f"{source} was exported for another preprocessing contract than bundle "
            f"'{bundle.name}' {bundle.version}"
            + (" (it carries no complete Basira metadata)" if found is None else "")
            + ": re-export it from this bundle.",
            expected=expected,
            found=found,
        )


def _open(model_path: Path, config: OnnxEngineConfig, level: GraphOptimization) -> OrtSession:
    return OrtSession(
        model_path,
        graph_optimization=level,
        threads=config.threads,
        spin_wait=config.spin_wait,
        providers=config.providers,
    )


class OnnxEngine:
    """:class:`~pipelines.engine.base.Engine` backed by an ONNX Runtime session.

    Args:
        session: the loaded model (logits out, dynamic batch, fixed ``roi_size_kji`` windows).
        inference: window size, overlap, blending, window batch and lung crop from the bundle.
        preprocess: the bundle's preprocessing, to find the lungs (``None``: whole volume).
        tta_flip_axes: spatial axes to flip for test-time augmentation (see
            :class:`OnnxEngineConfig`); empty: off.
    """

    def __init__(
        self,
        session: OrtSession,
        inference: InferenceConfig,
        *,
        preprocess: PreprocessConfig | None = None,
        tta_flip_axes: Sequence[int] = (),
    ) -> None:
        self.session = session
        self.inference = inference
        self.window = SlidingWindow(inference, preprocess)
        axes = tuple(tta_flip_axes)
        #: every subset of the flip axes, the identity first; one network pass each.
        self.flips: list[tuple[int, ...]] = [
            combo for n in range(len(axes) + 1) for combo in itertools.combinations(axes, n)
        ]

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, model_path: Path, config: OnnxEngineConfig | None = None
    ) -> OnnxEngine:
        """Load ``model_path`` for ``bundle``, refusing a model made for other preprocessing.

        Raises:
            ModelUnreadableError: ONNX Runtime cannot load the file.
            ModelMismatchError: the model's preprocessing hash is not the bundle's.
            ConfigError: a requested provider is not available.
        """
        config = config or OnnxEngineConfig()
        session = _open(model_path, config, config.graph_optimization or GraphOptimization.ALL)
        info = session.info
        check_model_matches(info, bundle, source=str(model_path))
        kept = info.graph_optimization if info is not None else session.graph_optimization
        if config.graph_optimization is None and kept != session.graph_optimization:
            session = _open(model_path, config, kept)  # the level the exporter measured best
        return cls(
            session,
            bundle.inference,
            preprocess=bundle.preprocess,
            tta_flip_axes=config.tta_flip_axes,
        )

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """ORT logits for a ``[b, 1, k, j, i]`` window batch, averaged over the TTA flips (each
        flipped back before averaging); what the engine chooser times."""
        if len(self.flips) == 1:
            return self.session.run(batch)
        total = np.zeros(batch.shape, dtype=np.float32)
        for axes in self.flips:
            dims = tuple(a + 2 for a in axes)
            logits = self.session.run(np.flip(batch, dims) if dims else batch)
            total += np.flip(logits, dims) if dims else logits
        return total / len(self.flips)

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        """Probability map ``[k, j, i]`` float32 for a ``[k, j, i]`` image in ``[0, 1]``."""
        return self.window.probabilities(image_kji, self.logits)


def to_float16(model: bytes) -> bytes:
    """``model`` with float16 weights and arithmetic, float32 input and output kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load_from_string(model), keep_io_types=True)
    return bytes(converted.SerializeToString())


def quantize_int8(model: bytes) -> bytes:
    """``model`` with int8 weights (dynamic quantisation: activations quantised per run, so no
    calibration data is needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
        source.write_bytes(model)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        return target.read_bytes()
