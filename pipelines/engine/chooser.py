"""Choose the engine that serves a model by timing the candidates on this host.

Which backend runs a 3-D UNet fastest depends on the CPU: on an AVX-512 machine ONNX Runtime on
OpenVINO beat torch by 1.3–1.4×, on an AVX2-only one torch beat it by 1.8× (``benchmarks/
RESULTS.md``). So no backend is preferred by rule. :func:`choose_engine` loads every candidate
(torch, ONNX Runtime on each installed execution provider, each at 1 … all cores' threads),
runs each once to warm it up (OpenVINO compiles on the first batch), then times one window batch
of the model's own input shape (``sw_batch_size`` windows of ``roi_size_kji``, what the sliding
window feeds) for a few rounds, the candidates taking turns so that a burst of load on a shared
machine hits them alike, and keeps the one with the lowest median. The windows, blending and
lung crop around the network are the same code for every engine, so the network call is what
differs.

The choice is cached in a JSON file keyed by the CPU (:func:`pipelines.cpu.cpu_info`), the model
files' digests, the window batch, the installed runtimes and the operator's restrictions, so a
host measures once per model (``basira models tune`` measures again on demand). An operator pins
the backend with ``kind`` (loaded as named, nothing timed) or narrows the candidates with
``threads`` and ``providers``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.bundle import Bundle
from pipelines.cpu import cpu_info
from pipelines.engine import EngineKind, load_engine
from pipelines.engine.base import Engine
from pipelines.errors import BasiraError, ConfigError, ModelError
from pipelines.result import CandidateTiming, ChosenBy, EngineCandidate, EngineRuntime

__all__ = [
    "AUTO",
    "CACHE_ENV",
    "ChosenEngine",
    "EngineChoice",
    "ModelFiles",
    "WindowEngine",
    "choose_engine",
    "default_cache_path",
    "list_candidates",
    "thread_counts",
    "time_engines",
]

log = logging.getLogger(__name__)

#: ``EngineChoice.kind`` that lets measurement choose the backend.
AUTO: Literal["auto"] = "auto"
#: The environment variable naming the engine choice cache (CLI and service alike).
CACHE_ENV = "BASIRA_ENGINE_CACHE"
_CACHE_VERSION: Literal[1] = 1
#: Timed rounds per candidate after the warm-up (median kept).
DEFAULT_ROUNDS = 3


class EngineChoice(BaseModel):
    """How the engine is chosen.

    Args:
        kind: ``auto`` (time the candidates), or ``onnx`` / ``torch`` to pin the backend: it is
            then loaded as named, with ``threads`` (``None``: one per core) and ``providers``
            (``None``: TensorRT, CUDA, OpenVINO, CPU as installed), and nothing is timed.
        threads: with ``auto``, time only this thread count.
        providers: ONNX Runtime's execution providers in order; with ``auto``, only ONNX Runtime
            with these providers is a candidate. Refused with ``torch``.
        cache: the JSON file that keeps choices (``None``: measure at every load, keep nothing).
        rounds: timed rounds per candidate after one warm-up.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["auto", "onnx", "torch"] = AUTO
    threads: int | None = Field(default=None, ge=1)
    providers: tuple[str, ...] | None = None
    cache: Path | None = None
    rounds: int = Field(default=DEFAULT_ROUNDS, ge=1)


@dataclass(frozen=True)
class ModelFiles:
    """A model's two forms and their SHA-256 digests (``None``: that form is absent)."""

    onnx: Path | None
    weights: Path | None
    digests: tuple[str, ...]


@dataclass(frozen=True)
class ChosenEngine:
    """The loaded engine and how it was chosen."""

    engine: Engine
    runtime: EngineRuntime


class WindowEngine(Engine, Protocol):
    """An engine whose network can be called on one window batch (both backends): what
    :func:`time_engines` times."""

    def logits(self, batch: np.ndarray) -> np.ndarray: ...


def default_cache_path() -> Path:
    """``$BASIRA_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/basira/engine-choice.json`` (``~/.cache``
    when unset)."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "basira" / "engine-choice.json"


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, … below ``cores``, and ``cores``: every count on a small server, a handful on a
    large one."""
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    return [*counts, cores] if cores > 1 else counts


def list_candidates(
    files: ModelFiles, choice: EngineChoice, *, available_providers: Sequence[str]
) -> list[EngineCandidate]:
    """Every way ``choice`` leaves to run the model on this host: torch when the weights are
    there and torch is installed (not with ``providers``), ONNX Runtime on each of
    ``available_providers`` (or on ``choice.providers``), each at every thread count.

    Raises:
        ConfigError: ``choice.providers`` names a provider that is not installed.
    """
    missing = [name for name in choice.providers or () if name not in available_providers]
    if missing:
        raise ConfigError(
            f"Execution providers {missing} are not available; this onnxruntime offers "
            f"{list(available_providers)}.",
            requested=list(choice.providers or ()),
            available=list(available_providers),
        )
    threads = [choice.threads] if choice.threads else thread_counts(cpu_info().logical_cpus)
    onnx: list[tuple[str, ...]] = []
    if files.onnx is not None:
        onnx = [choice.providers] if choice.providers else [(p,) for p in available_providers]
    found: list[EngineCandidate] = []
    if files.weights is not None and not choice.providers and _installed("torch"):
        found += [EngineCandidate(engine="torch", threads=n) for n in threads]
    for providers in onnx:
        found += [EngineCandidate(engine="onnx", providers=providers, threads=n) for n in threads]
    return found


def choose_engine(
    bundle: Bundle, files: ModelFiles, choice: EngineChoice, *, remeasure: bool = False
) -> ChosenEngine:
    """Load the engine ``choice`` asks for: the pinned backend, the cached choice for this CPU
    and model, or the fastest candidate as measured now (then cached). ``remeasure`` ignores a
    cached choice (``basira models tune``). The choice is logged as one JSON line.

    Raises:
        ConfigError: providers with the torch engine, or a provider that is not installed.
        ModelError: no candidate could run the model (each one's error is in ``detail``).
        and whatever :func:`~pipelines.engine.load_engine` raises for a pinned backend.
    """
    if choice.kind != AUTO:
        chosen = _pinned(bundle, files, choice)
    else:
        chosen = _auto(bundle, files, choice, remeasure=remeasure)
    log.info("engine chosen: %s", chosen.runtime.model_dump_json(exclude={"cpu"}))
    return chosen


def _pinned(bundle: Bundle, files: ModelFiles, choice: EngineChoice) -> ChosenEngine:
    kind: Literal["onnx", "torch"] = "torch" if choice.kind == "torch" else "onnx"
    candidate = EngineCandidate(
        engine=kind, providers=choice.providers or (), threads=choice.threads
    )
    engine = _load(bundle, files, candidate)
    return ChosenEngine(engine, _runtime(engine, candidate, ChosenBy.PINNED))


def _auto(
    bundle: Bundle, files: ModelFiles, choice: EngineChoice, *, remeasure: bool
) -> ChosenEngine:
    import onnxruntime as ort

    from pipelines.engine.onnx_engine import select_providers

    available = select_providers(ort.get_available_providers())
    candidates = list_candidates(files, choice, available_providers=available)
    if not candidates:
        raise ModelError(
            "No engine can run this model here: it has no ONNX file for ONNX Runtime, and no "
            "weights or no torch installed for the torch engine.",
            errors={},
        )
    key = _cache_key(bundle, files, choice)
    cached = None if remeasure or choice.cache is None else _read_cache(choice.cache).get(key)
    if cached is not None and cached.chosen in candidates:
        try:
            engine = _load(bundle, files, cached.chosen)
        except Exception as exc:  # the host changed under the cache; ORT raises its own types
            log.warning(
                "cached engine %s does not load (%s); measuring",
                cached.chosen.label,
                _why(cached.chosen, exc),
            )
        else:
            runtime = cached.model_copy(
                update={"chosen_by": ChosenBy.CACHED, "providers": _session_providers(engine)}
            )
            return ChosenEngine(engine, runtime)
    if len(candidates) == 1 and not remeasure:  # the operator's settings left one: no race
        engine = _load(bundle, files, candidates[0])
        return ChosenEngine(engine, _runtime(engine, candidates[0], ChosenBy.PINNED))
    chosen = _measure(bundle, files, candidates, choice.rounds)
    if choice.cache is not None:
        _write_cache(choice.cache, key, chosen.runtime)
    return chosen


def _measure(
    bundle: Bundle, files: ModelFiles, candidates: Sequence[EngineCandidate], rounds: int
) -> ChosenEngine:
    """Load and warm up every candidate, time those that run, keep the fastest."""
    shape = (bundle.inference.sw_batch_size, 1, *bundle.inference.roi_size_kji)
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    engines: dict[EngineCandidate, WindowEngine] = {}
    errors: dict[EngineCandidate, str] = {}
    for candidate in candidates:
        try:
            engine = _load(bundle, files, candidate)
            engine.logits(batch)  # warm-up, untimed: OpenVINO compiles on the first batch
        except Exception as exc:  # ONNX Runtime's own errors derive from Exception only
            errors[candidate] = _why(candidate, exc)
            continue
        engines[candidate] = engine
    if not engines:
        raise ModelError(
            "No engine could run the model on this host: "
            + "; ".join(f"{c.label}: {e}" for c, e in errors.items()),
            errors={c.label: e for c, e in errors.items()},
        )
    best, timed = time_engines(engines, batch, rounds, errors)
    timings = [
        timed.get(candidate) or CandidateTiming(candidate=candidate, error=errors.get(candidate))
        for candidate in candidates
    ]
    runtime = _runtime(engines[best], best, ChosenBy.MEASURED).model_copy(
        update={
            "window_batch_shape": shape,
            "candidates": timings,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return ChosenEngine(engines[best], runtime)


def time_engines(
    engines: Mapping[EngineCandidate, WindowEngine],
    batch: np.ndarray,
    rounds: int,
    errors: dict[EngineCandidate, str] | None = None,
) -> tuple[EngineCandidate, dict[EngineCandidate, CandidateTiming]]:
    """Time each of ``engines`` (already warmed up) on ``batch`` (``[b, 1, k, j, i]``), in turns
    for ``rounds`` rounds so that load on a shared machine falls on all of them alike; the one
    with the lowest median time, and every engine's median. An engine that fails during the
    rounds is dropped, with why in ``errors``.

    Raises:
        ValueError: ``engines`` is empty.
        ModelError: every engine failed during the rounds.
    """
    if not engines:
        raise ValueError("no engine to time")
    failed = errors if errors is not None else {}
    runs: dict[EngineCandidate, list[float]] = {candidate: [] for candidate in engines}
    for _ in range(rounds):
        for candidate, engine in engines.items():
            if candidate in failed:
                continue
            start = time.perf_counter()
            try:
                engine.logits(batch)
            except Exception as exc:  # dropped, as a candidate that fails its warm-up
                failed[candidate] = _why(candidate, exc)
                continue
            runs[candidate].append((time.perf_counter() - start) * 1000.0)
    medians = {
        candidate: statistics.median(times)
        for candidate, times in runs.items()
        if times and candidate not in failed
    }
    if not medians:
        raise ModelError(
            "No engine could run the model on this host: "
            + "; ".join(f"{c.label}: {e}" for c, e in failed.items()),
            errors={c.label: e for c, e in failed.items()},
        )
    best = min(medians, key=medians.__getitem__)
    timed = {
        candidate: CandidateTiming(candidate=candidate, window_batch_ms=round(median, 3))
        for candidate, median in medians.items()
    }
    return best, timed


def _why(candidate: EngineCandidate, exc: Exception) -> str:
    """Why a candidate could not run, as users may read it: a coded error's class and message,
    or, for any other (ONNX Runtime's own, torch's), a coded sentence; its text goes to the log
    only."""
    if isinstance(exc, BasiraError):
        return f"{type(exc).__name__}: {exc.message}"
    log.warning("engine %s failed: %s", candidate.label, exc, exc_info=exc)
    return f"{ModelError.code}: the engine failed while running a window batch ({candidate.label})"


def _load(bundle: Bundle, files: ModelFiles, candidate: EngineCandidate) -> WindowEngine:
    path = files.onnx if candidate.engine == "onnx" else files.weights
    if path is None:
        raise ConfigError(
            f"The model has no file for the {candidate.engine} engine.", engine=candidate.engine
        )
    engine = load_engine(
        EngineKind(candidate.engine),
        bundle,
        path,
        threads=candidate.threads,
        providers=candidate.providers or None,
    )
    return engine  # type: ignore[return-value]  # both backends have ``logits``


def _runtime(engine: Engine, candidate: EngineCandidate, chosen_by: ChosenBy) -> EngineRuntime:
    return EngineRuntime(
        cpu=cpu_info(),
        chosen=candidate,
        providers=_session_providers(engine),
        chosen_by=chosen_by,
    )


def _session_providers(engine: Engine) -> tuple[str, ...]:
    session = getattr(engine, "session", None)
    return tuple(session.providers) if session is not None else ()


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _cache_key(bundle: Bundle, files: ModelFiles, choice: EngineChoice) -> str:
    """A digest of everything the choice depends on: the CPU, the model, the window batch, the
    installed runtimes and the operator's restrictions."""
    facts = {
        "cpu": cpu_info().identity,
        "model": list(files.digests),
        "window_batch": [bundle.inference.sw_batch_size, *bundle.inference.roi_size_kji],
        "software": {
            name: _version(name)
            for name in ("torch", "onnxruntime", "onnxruntime-openvino", "onnxruntime-gpu")
        },
        "restrict": {"threads": choice.threads, "providers": choice.providers},
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode("utf-8")).hexdigest()


class _CacheFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = _CACHE_VERSION
    entries: dict[str, EngineRuntime] = Field(default_factory=dict)


def _read_cache(path: Path) -> dict[str, EngineRuntime]:
    """The cached choices; an absent, unreadable or foreign file is an empty cache (logged)."""
    try:
        if not path.is_file():
            return {}
        return _CacheFile.model_validate_json(path.read_bytes()).entries
    except (OSError, ValidationError) as exc:
        log.warning("engine choice cache %s is unreadable (%s); measuring again", path, exc)
        return {}


def _write_cache(path: Path, key: str, runtime: EngineRuntime) -> None:
    """Add ``runtime`` under ``key``, atomically; a cache that cannot be written is logged and
    skipped (the engine still runs, the next start measures again)."""
    entries = {**_read_cache(path), key: runtime}
    text = _CacheFile(entries=entries).model_dump_json(indent=2)
    written: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".engine-choice-", delete=False, encoding="utf-8"
        ) as tmp:
            written = Path(tmp.name)
            tmp.write(text + "\n")
        os.replace(written, path)
    except OSError as exc:
        if written is not None:
            written.unlink(missing_ok=True)  # never a stray temporary file a start
        log.warning("engine choice not cached: %s is not writable (%s)", path, exc)


def is_cached(path: Path, runtime: EngineRuntime) -> bool:
    """Whether the cache at ``path`` holds this measured choice (``basira models tune`` says so
    only when it does)."""
    return any(
        entry.chosen == runtime.chosen and entry.measured_at == runtime.measured_at
        for entry in _read_cache(path).values()
    )
