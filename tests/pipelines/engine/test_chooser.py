"""The engine chooser: real torch and ONNX Runtime engines timed on the model's own window batch,
the fastest kept; the choice cached by CPU and model, pinned by the operator, and refused for a
provider that is not installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipelines.bundle import Bundle, load_bundle
from pipelines.cpu import cpu_info
from pipelines.engine.chooser import (
    EngineChoice,
    ModelFiles,
    WindowEngine,
    choose_engine,
    list_candidates,
    thread_counts,
    time_engines,
)
from pipelines.engine.onnx_engine import OnnxEngine, OnnxEngineConfig, select_providers
from pipelines.engine.torch_engine import TorchEngine
from pipelines.errors import ConfigError, ModelError
from pipelines.inference.predict import load_model, release_files, tune_release
from pipelines.result import ChosenBy, EngineCandidate
from tests.pipelines.releases import make_release, small_bundle

MLAS = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("chooser"), small_bundle())


@pytest.fixture(scope="module")
def bundle(release: Path) -> Bundle:
    return load_bundle(release / "bundle.yaml")


def _onnx(bundle: Bundle, release: Path, *, threads: int, tta: tuple[int, ...]) -> OnnxEngine:
    from pipelines.engine import load_onnx_engine

    config = OnnxEngineConfig(providers=(MLAS,), threads=threads, tta_flip_axes=tta)
    return load_onnx_engine(bundle, release / "model.onnx", config)


@pytest.mark.parametrize("slow_first", [True, False])
def test_the_chooser_keeps_the_faster_of_two_real_engines_as_measured(
    bundle: Bundle, release: Path, slow_first: bool
) -> None:
    """Two real ONNX Runtime engines on the same model, one handicapped by test-time
    augmentation over three axes (8 network passes a window, docs/export.md): the plain one must
    win whether it is timed first or second and whether it has one thread or two (a chooser
    that takes the first, the last, or a fixed thread count fails one case), and the choice must
    be the argmin of the recorded times."""
    batch = np.random.default_rng(0).random(
        (bundle.inference.sw_batch_size, 1, *bundle.inference.roi_size_kji), dtype=np.float32
    )
    one, two = (EngineCandidate(engine="onnx", providers=(MLAS,), threads=n) for n in (1, 2))
    slow, fast = (one, two) if slow_first else (two, one)
    built = {
        slow: _onnx(bundle, release, threads=slow.threads or 1, tta=(0, 1, 2)),
        fast: _onnx(bundle, release, threads=fast.threads or 1, tta=()),
    }
    order = (slow, fast) if slow_first else (fast, slow)
    engines: dict[EngineCandidate, WindowEngine] = {c: built[c] for c in order}
    for engine in engines.values():
        engine.logits(batch)  # warm-up

    best, timed = time_engines(engines, batch, rounds=3)

    times = {candidate: timing.window_batch_ms for candidate, timing in timed.items()}
    assert best == fast
    assert best == min(times, key=lambda c: times[c] or float("inf"))
    assert all(ms is not None and ms > 0 for ms in times.values())


def test_torch_against_onnx_runtime_the_choice_is_the_measured_fastest(
    bundle: Bundle, release: Path
) -> None:
    """Every candidate on this host (torch and ONNX Runtime on each installed provider, at each
    thread count) is loaded and timed; the engine served is the one with the lowest time."""
    chosen = choose_engine(bundle, release_files(release, bundle), EngineChoice(rounds=2))
    runtime = chosen.runtime

    timed = {t.candidate: t.window_batch_ms for t in runtime.candidates if t.window_batch_ms}
    assert runtime.chosen_by is ChosenBy.MEASURED
    assert {c.engine for c in timed} == {"torch", "onnx"}
    assert runtime.chosen == min(timed, key=lambda c: timed[c] or 0.0)
    counts = len(thread_counts(cpu_info().logical_cpus))
    providers = select_providers(ort.get_available_providers())
    assert len(runtime.candidates) == counts * (1 + len(providers))
    assert runtime.cpu == cpu_info()
    assert runtime.window_batch_shape == (
        bundle.inference.sw_batch_size,
        1,
        *bundle.inference.roi_size_kji,
    )
    expected = TorchEngine if runtime.chosen.engine == "torch" else OnnxEngine
    assert isinstance(chosen.engine, expected)
    if isinstance(chosen.engine, OnnxEngine):
        assert chosen.engine.session.providers[0] == runtime.chosen.providers[0]
        assert runtime.providers == tuple(chosen.engine.session.providers)


def test_the_choice_is_cached_by_cpu_and_model_and_a_restriction_measures_again(
    bundle: Bundle, release: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "engine-choice.json"
    files = release_files(release, bundle)
    first = choose_engine(bundle, files, EngineChoice(cache=cache, rounds=1)).runtime
    again = choose_engine(bundle, files, EngineChoice(cache=cache, rounds=1)).runtime
    narrowed = choose_engine(bundle, files, EngineChoice(cache=cache, threads=1, rounds=1))

    assert first.chosen_by is ChosenBy.MEASURED and again.chosen_by is ChosenBy.CACHED
    assert again.chosen == first.chosen and again.candidates == first.candidates
    assert narrowed.runtime.chosen_by is ChosenBy.MEASURED
    assert {t.candidate.threads for t in narrowed.runtime.candidates} == {1}
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_a_corrupt_cache_is_measured_again_and_rewritten(
    bundle: Bundle, release: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "engine-choice.json"
    cache.write_text("{not json")
    choice = EngineChoice(cache=cache, threads=1, rounds=1)
    with caplog.at_level(logging.WARNING, logger="pipelines.engine.chooser"):
        runtime = choose_engine(bundle, release_files(release, bundle), choice).runtime

    assert runtime.chosen_by is ChosenBy.MEASURED
    assert "unreadable" in caplog.text
    assert json.loads(cache.read_text())["entries"]


def test_a_pinned_engine_is_loaded_as_named_and_nothing_is_timed(
    bundle: Bundle, release: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.engine.chooser"):
        chosen = choose_engine(
            bundle, release_files(release, bundle), EngineChoice(kind="torch", threads=1)
        )

    assert isinstance(chosen.engine, TorchEngine)
    assert chosen.runtime.chosen_by is ChosenBy.PINNED
    assert chosen.runtime.candidates == [] and chosen.runtime.measured_at is None
    logged = caplog.text.split("engine chosen: ", 1)[1].splitlines()[0]
    assert json.loads(logged)["chosen"] == {"engine": "torch", "providers": [], "threads": 1}


def test_providers_narrow_the_candidates_to_onnx_runtime_and_an_absent_one_is_refused(
    bundle: Bundle, release: Path
) -> None:
    files = release_files(release, bundle)
    only_mlas = EngineChoice(providers=(MLAS,))
    found = list_candidates(files, only_mlas, available_providers=[MLAS])
    assert {c.engine for c in found} == {"onnx"} and {c.providers for c in found} == {(MLAS,)}

    with pytest.raises(ConfigError) as refused:
        choose_engine(bundle, files, EngineChoice(providers=("NoSuchExecutionProvider",)))
    assert refused.value.code == "config.invalid"
    assert MLAS in refused.value.detail["available"]


def test_thread_counts_cover_a_small_server_and_sample_a_large_one() -> None:
    assert thread_counts(1) == [1]
    assert thread_counts(2) == [1, 2]
    assert thread_counts(6) == [1, 2, 4, 6]
    assert thread_counts(16) == [1, 2, 4, 8, 16]


def test_when_no_candidate_runs_the_model_is_refused_with_each_candidates_error(
    bundle: Bundle, tmp_path: Path
) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    files = ModelFiles(onnx=broken, weights=None, digests=("0" * 64, ""))

    with pytest.raises(ModelError) as refused:
        choose_engine(bundle, files, EngineChoice(threads=1))

    assert refused.value.code == "model.invalid"
    errors = refused.value.detail["errors"]
    assert errors and all("ModelUnreadableError" in e for e in errors.values())


def test_tuning_measures_and_caches_even_a_single_candidate(release: Path, tmp_path: Path) -> None:
    cache = tmp_path / "engine-choice.json"
    narrow = EngineChoice(threads=1, providers=(MLAS,), cache=cache, rounds=1)

    tuned = tune_release(release, narrow)
    loaded = load_model(release, narrow).runtime

    assert tuned.chosen_by is ChosenBy.MEASURED and len(tuned.candidates) == 1
    assert loaded.chosen_by is ChosenBy.CACHED and loaded.chosen == tuned.chosen
    with pytest.raises(ConfigError):
        tune_release(release, EngineChoice(kind="onnx", cache=cache))


class _FailsOnSecondCall(torch.nn.Module):
    """A network that runs once (the warm-up) and then raises an error that is not a Basira
    one, as ONNX Runtime's own errors are not: an engine that breaks during the timed rounds."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise ValueError("kernel failed")
        return batch


def test_an_engine_that_fails_while_timed_is_dropped_with_a_coded_reason(
    bundle: Bundle, release: Path
) -> None:
    batch = np.random.default_rng(0).random(
        (bundle.inference.sw_batch_size, 1, *bundle.inference.roi_size_kji), dtype=np.float32
    )
    good = EngineCandidate(engine="onnx", providers=(MLAS,), threads=1)
    bad = EngineCandidate(engine="torch", threads=1)
    engines: dict[EngineCandidate, WindowEngine] = {
        bad: TorchEngine(_FailsOnSecondCall(), bundle.inference, threads=1),
        good: _onnx(bundle, release, threads=1, tta=()),
    }
    for engine in engines.values():
        engine.logits(batch)  # warm-up
    errors: dict[EngineCandidate, str] = {}

    best, timed = time_engines(engines, batch, rounds=2, errors=errors)

    assert best == good and bad not in timed
    assert errors[bad].startswith("model.invalid: ") and "kernel failed" not in errors[bad]
