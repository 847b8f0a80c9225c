"""One chest CT from DICOM to every output with the shipped reference model (issue 5).

Measured: ``basira predict`` end to end as a user runs it (a fresh process: start, verify and load
the release, read, check, preprocess, infer, findings, JSON + SEG + SR + FHIR + key images), its
stage breakdown, and its peak memory; and the same study from DICOM read to every output written
with the model already loaded, as the service's worker and a ``basira predict`` batch run each
study. Baselines in the same run, on the same series and the same network weights: the pipeline
a MONAI user writes by default (``LoadImage`` on the DICOM folder → ``Spacing`` → intensity
scaling → ``sliding_window_inference`` over the whole volume, torch, model loaded once, writing
nothing), and the engines on the same preprocessed volume through the same sliding window and
lung crop: torch, ONNX Runtime on OpenVINO's CPU kernels and on its own, each on two threads and
one. Basira runs the engine its chooser measured fastest on this host (``basira models tune``
first, timed, into a private cache that every later run reads), or the engine ``--engine`` pins:
with the instruction set capped, ``--engine torch`` serves what an AVX2-only CPU's chooser serves
(OpenVINO's CPU plugin does not follow the cap on every CPU, so its capped figures can flatter an
AVX2-only CPU, where it is the slowest engine; ``benchmarks/RESULTS.md``). The CPU (model,
instruction sets, any cap set with ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``) and the
machine's load average are printed with the figures: on a shared 2-core machine load moves them by
tens of percent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.common import median_seconds, print_table
from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.index import index_inputs
from pipelines.dicom.read import read_series_volume
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series
from pipelines.engine import Engine, load_engine, load_onnx_engine
from pipelines.engine.chooser import CACHE_ENV, EngineChoice
from pipelines.engine.onnx_engine import OnnxEngineConfig
from pipelines.engine.sliding_window import SlidingWindow, window_starts
from pipelines.inference.predict import StudyAnalysis, load_model
from pipelines.model.release import verify_release
from pipelines.reports import OutputFormat
from pipelines.result import StudyStatus
from pipelines.transforms import preprocess_volume

RELEASE = Path(__file__).resolve().parents[1] / "models" / "lung-nodule-unet" / "release"
FORMATS = "json,seg,sr,fhir,keyimages"
#: ``auto``: the chooser; ``onnx`` / ``torch``: pinned (``basira predict --engine``).
EngineKind = Literal["auto", "onnx", "torch"]


def _chest_series(out: Path, shape: tuple[int, int, int]) -> Path:
    """A chest-like CT series (body, two dark lungs, a spine, one nodule) at 0.7 × 0.7 × 1.25 mm."""
    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cj, ci = shape[1] / 2, shape[2] / 2
    body = ((j - cj) / (shape[1] * 0.33)) ** 2 + ((i - ci) / (shape[2] * 0.42)) ** 2 < 1
    lungs = ((j - cj) / (shape[1] * 0.25)) ** 2 + (
        (np.abs(i - ci) - shape[2] * 0.2) / (shape[2] * 0.14)
    ) ** 2 < 1
    spine = (j - cj - shape[1] * 0.22) ** 2 + (i - ci) ** 2 < (shape[2] * 0.05) ** 2
    nodule = (k - shape[0] / 2) ** 2 + (j - cj) ** 2 + (i - ci + shape[2] * 0.2) ** 2 < 64
    volume = np.full(shape, -1000.0, np.float32)
    volume[np.broadcast_to(body, shape)] = 40.0
    volume[np.broadcast_to(lungs, shape)] = -850.0
    volume[np.broadcast_to(spine, shape)] = 700.0
    volume[nodule] = 30.0
    volume += rng.normal(0, 20, shape).astype(np.float32)
    affine = affine_from_dicom((1, 0, 0, 0, 1, 0), (0.7, 0.7), (-180.0, -180.0, 0.0), (0, 0, -1.25))
    write_ct_series(volume, affine, out, CTSeriesInfo(uid_seed=str(out), slice_thickness_mm=1.25))
    return out


def _basira(*args: str, cache: Path) -> float:
    """Wall time of ``basira ARGS`` in a fresh process reading and writing the engine ``cache``."""
    command = [str(Path(sys.executable).parent / "basira"), *args]
    start = time.perf_counter()
    subprocess.run(
        command, check=True, capture_output=True, env={**os.environ, CACHE_ENV: str(cache)}
    )
    return time.perf_counter() - start


def _basira_cli(series: Path, out: Path, cache: Path, engine: str) -> tuple[float, dict[str, Any]]:
    """Wall time of ``basira predict`` in a fresh process, and the study's result JSON."""
    args = ["predict", str(series), "--out", str(out), "--model", str(RELEASE)]
    seconds = _basira(*args, "--format", FORMATS, "--engine", engine, cache=cache)
    (result,) = [p for p in out.glob("*.json") if not p.name.endswith(".fhir.json")]
    return seconds, json.loads(result.read_text())


def _basira_loaded(series: Path, out: Path, cache: Path, engine: EngineKind) -> Any:
    """One study from DICOM read to every output written, the release loaded beforehand with the
    engine choice in ``cache`` or the ``engine`` pinned (the code ``basira predict`` runs per
    study after loading the model once)."""
    model = load_model(RELEASE, EngineChoice(kind=engine, cache=cache))
    formats = frozenset(OutputFormat(name) for name in FORMATS.split(",") if name != "json")

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="basira-bench-work-") as work:
            studies = index_inputs([series], workdir=Path(work)).studies
            (result,) = StudyAnalysis(model, out, formats).run(studies)
            if result.status is not StudyStatus.COMPLETED:
                raise RuntimeError(f"the benchmark study ended {result.status}")

    return run


def _monai_default(series: Path, bundle: Any, weights: Path) -> Any:
    """The default MONAI pipeline on the same folder and weights (torch, whole volume)."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        ScaleIntensityRange,
        Spacing,
    )

    from pipelines.networks import build_network

    network = build_network(bundle.network.name, bundle.network.kwargs)
    network.load_state_dict(torch.load(weights, weights_only=True))
    network.eval()
    low, high = bundle.preprocess.window_hu
    transform = Compose(
        [
            LoadImage(reader="PydicomReader", image_only=True),
            EnsureChannelFirst(),
            Spacing(pixdim=bundle.preprocess.target_spacing_mm, mode="bilinear"),
            ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        ]
    )

    def run() -> None:
        image = transform(str(series))
        with torch.no_grad():
            sliding_window_inference(
                image[None].float(), bundle.inference.roi_size_kji, 2, network, overlap=0.25
            )

    return run


def run(quick: bool = False, engine: EngineKind = "auto") -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick``: a small series, one repeat; ``engine``:
    ``auto``, the chooser, or ``onnx`` / ``torch`` pinned)."""
    shape = (128, 96, 96) if quick else (250, 512, 512)  # quick: still 160 mm, a chest
    repeats = 1 if quick else 3
    bundle = verify_release(RELEASE)
    load_at_start = _load()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="basira-bench-") as tmp:
        series = _chest_series(Path(tmp) / "series", shape)
        cache = Path(tmp) / "engine-choice.json"
        tune = (
            _basira("models", "tune", "--model", str(RELEASE), "--rounds", "3", cache=cache)
            if engine == "auto"
            else None
        )
        runs = [_basira_cli(series, Path(tmp) / f"out{n}", cache, engine) for n in range(repeats)]
        total = float(np.median([seconds for seconds, _ in runs]))
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = runs[len(runs) // 2][1]
        loaded = median_seconds(
            _basira_loaded(series, Path(tmp) / "loaded", cache, engine), repeats
        )
        monai = median_seconds(_monai_default(series, bundle, RELEASE / "model.pt"), repeats)
        label = f"{shape[2]}x{shape[1]}x{shape[0]}"
        rows += _choice_rows(result["runtime"], tune)
        rows.append(
            {
                "what": f"basira predict, {label}, all outputs (fresh process, choice cached)",
                "seconds": total,
                "x MONAI default": total / monai,
                "peak MB": peak_mb,
            }
        )
        rows.append(
            {
                "what": "basira, model loaded: DICOM read to all outputs written",
                "seconds": loaded,
                "x MONAI default": loaded / monai,
            }
        )
        rows.append(
            {
                "what": "MONAI default pipeline (torch, whole volume)",
                "seconds": monai,
                "x MONAI default": 1.0,
            }
        )
        stages = result["timings_ms"]
        rows += [{"what": f"  stage: {name}", "seconds": ms / 1000} for name, ms in stages.items()]
        volume = read_series_volume(index_inputs([series], workdir=Path(tmp)).studies[0].series[0])
        rows += _engine_rows(bundle, preprocess_volume(volume, bundle.preprocess).array, repeats)
    rows.append(
        {"what": f"load average (1 min) at start / end: {load_at_start:.2f} / {_load():.2f}"}
    )
    return rows


def _choice_rows(runtime: dict[str, Any], tune_seconds: float | None) -> list[dict[str, Any]]:
    """What the chooser measured (one window batch per candidate) and what it chose, or the
    engine pinned (``tune_seconds`` None)."""
    if tune_seconds is None:
        chosen = runtime["chosen"]
        threads = chosen["threads"] or "default"
        return [{"what": f"engine pinned: {chosen['engine']}, {threads} threads"}]
    shape = "x".join(str(n) for n in runtime["window_batch_shape"])
    rows: list[dict[str, Any]] = [
        {
            "what": f"basira models tune (fresh process, window batch {shape})",
            "seconds": tune_seconds,
        }
    ]
    for timing in runtime["candidates"]:
        candidate = timing["candidate"]
        providers = "+".join(candidate["providers"])
        mark = " (chosen)" if candidate == runtime["chosen"] else ""
        ms = timing["window_batch_ms"]
        rows.append(
            {
                "what": f"  candidate {candidate['engine']} {providers} {candidate['threads']} "
                f"threads{mark}",
                "seconds": ms / 1000 if ms is not None else timing["error"],
            }
        )
    return rows


def _engine_rows(bundle: Any, image: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    """The engines on the same preprocessed volume (lung crop on, as served): torch, ONNX Runtime
    on OpenVINO and on its own CPU kernels, each on two threads and one.

    The engines take turns, one run each per round, so a burst of load on the shared machine
    falls on all of them rather than on whichever happened to be running; median per engine.
    """
    region = SlidingWindow(bundle.inference, bundle.preprocess).region(image)
    windows = _window_count(image[region].shape, bundle.inference)
    runs: dict[str, Engine] = {}
    for threads in (2, 1):
        torch_engine = load_engine("torch", bundle, RELEASE / "model.pt", threads=threads)
        runs[f"engine torch, {threads} threads"] = torch_engine
        for provider in ("OpenVINOExecutionProvider", "CPUExecutionProvider"):
            config = OnnxEngineConfig(providers=(provider,), threads=threads)
            label = f"engine onnx on {provider}, {threads} threads"
            runs[label] = load_onnx_engine(bundle, RELEASE / "model.onnx", config)
    for engine in runs.values():
        engine.predict(image)  # warm-up, untimed
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, engine in runs.items():
            start = time.perf_counter()
            engine.predict(image)
            seconds[label].append(time.perf_counter() - start)
    note = f": {windows} windows of the lung box of preprocessed {image.shape}"
    return [
        {"what": label + note, "seconds": float(np.median(times))}
        for label, times in seconds.items()
    ]


def _window_count(shape_kji: tuple[int, ...], inference: Any) -> int:
    return math.prod(
        len(window_starts(max(n, r), r, inference.overlap))
        for n, r in zip(shape_kji, inference.roi_size_kji, strict=True)
    )


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small series (smoke test)")
    parser.add_argument(
        "--engine",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="auto: the chooser (timed by basira models tune); onnx or torch: pinned",
    )
    args = parser.parse_args()
    print_table(
        "Predict one study (DICOM to all outputs)", run(quick=args.quick, engine=args.engine)
    )


if __name__ == "__main__":
    main()
