"""Package a trained, calibrated model as the self-contained bundle folder that ships in git.

A release folder holds everything serving and a reviewer need, and nothing that points outside:

- ``bundle.yaml``: the recipe with ``calibration``, ``operating_point`` and ``checksums`` filled;
- ``model.pt``: the network's state dict; ``model.onnx`` exported from it with proven parity
  (``model.export.json`` records the parity figures and the variant kept); ``calibration.json``;
  ``metrics.json`` (the locked test split); ``history.json`` (the training run);
- ``MODEL_CARD.md``: rendered from those files, so its figures can never drift from the metrics;
- ``SHA256SUMS``: one line per file, checked by :func:`verify_release` before a model is served.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.bundle import BUNDLE_FILE, Bundle, load_bundle, sha256_file, write_bundle
from pipelines.calibration import CALIBRATION_FILE
from pipelines.errors import InputNotFoundError, ModelIntegrityError
from pipelines.model.card import CardInputs, render_model_card

if TYPE_CHECKING:
    # torch and onnx load with the exporter: only packaging needs them, not verify_release
    from pipelines.model.export import ExportConfig

WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CARD_FILE = "MODEL_CARD.md"
SUMS_FILE = "SHA256SUMS"
#: The export report beside `model.onnx` (:func:`pipelines.model.export.report_path`).
EXPORT_REPORT_FILE = "model.export.json"
#: Files whose digests go into ``bundle.yaml`` (the card and the bundle itself are in SHA256SUMS).
_ARTEFACTS = (WEIGHTS_FILE, ONNX_FILE, CALIBRATION_FILE, METRICS_FILE, HISTORY_FILE)


def package_release(
    calibrated_bundle: Path,
    weights: Path,
    metrics: Path,
    out_dir: Path,
    *,
    limitations: Path | None = None,
    trained_on: str = "",
    export: ExportConfig | None = None,
) -> Path:
    """Write the release folder ``out_dir`` and return its bundle path.

    The release is assembled beside ``out_dir`` and swapped in only once complete, so a failed
    export or a missing input leaves an existing release untouched.

    ``calibrated_bundle`` is the bundle folder written by ``basira calibrate`` (holding
    ``calibration.json`` and the run's ``history.json``); ``limitations`` is a Markdown file
    whose text becomes the card's "Known limitations" section. The ONNX export checks parity
    on patches and on a whole volume (``export`` overrides the settings).

    Raises:
        InputNotFoundError: a named input does not exist or the bundle is not calibrated.
        ConfigError: the bundle does not validate.
        ExportParityError: ONNX Runtime disagrees with torch (nothing is released).
    """
    bundle_path = calibrated_bundle / BUNDLE_FILE
    bundle = load_bundle(bundle_path)
    calibration = calibrated_bundle / (bundle.calibration or CALIBRATION_FILE)
    history = _history_file(calibrated_bundle, weights)
    for required in (weights, metrics, calibration, history):
        if not required.is_file():
            raise InputNotFoundError(f"{required} does not exist.", path=str(required))
    sources = {
        WEIGHTS_FILE: weights,
        CALIBRATION_FILE: calibration,
        METRICS_FILE: metrics,
        HISTORY_FILE: history,
    }
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        released = _fill(staging, bundle, sources, export)
        card = render_model_card(_card_inputs(released, staging, limitations, trained_on))
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        _write_sums(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the previous release stays as it was
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir / BUNDLE_FILE


def _fill(
    folder: Path, bundle: Bundle, sources: dict[str, Path], export: ExportConfig | None
) -> Bundle:
    """Copy the inputs, export the ONNX model with proven parity, write the checksummed bundle."""
    from pipelines.model.export import ExportConfig, export_model

    for name, source in sources.items():
        shutil.copyfile(source, folder / name)
    released = bundle.model_copy(update={"calibration": CALIBRATION_FILE, "checksums": {}})
    write_bundle(released, folder / BUNDLE_FILE)
    export_model(
        folder / BUNDLE_FILE,
        folder / WEIGHTS_FILE,
        folder / ONNX_FILE,
        export or ExportConfig(check_volume=True),
    )
    checksums = {name: sha256_file(folder / name) for name in _ARTEFACTS}
    released = released.model_copy(update={"checksums": checksums})
    write_bundle(released, folder / BUNDLE_FILE)
    return released


def verify_release(release_dir: Path) -> Bundle:
    """Check every file against ``SHA256SUMS`` and the bundle's checksums; return the bundle.

    Raises:
        InputNotFoundError: the folder, its bundle or its SHA256SUMS is missing.
        ModelIntegrityError: a listed file is missing or its digest differs (a corrupt copy or
            a hand edit): the model must not be served.
    """
    sums = release_dir / SUMS_FILE
    if not sums.is_file():
        raise InputNotFoundError(f"{sums} does not exist: not a release folder.", path=str(sums))
    expected: dict[str, str] = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if name:
            expected[name] = digest
    for name, digest in sorted(expected.items()):
        path = release_dir / name
        if not path.is_file():
            raise ModelIntegrityError(f"{path} is listed in {SUMS_FILE} but missing.", file=name)
        if sha256_file(path) != digest:
            raise ModelIntegrityError(
                f"{path} does not match its checksum: the model files are corrupt or were "
                "edited after release.",
                file=name,
            )
    bundle = load_bundle(release_dir / BUNDLE_FILE)
    for name, digest in bundle.checksums.items():
        if expected.get(name) != digest:
            raise ModelIntegrityError(
                f"{BUNDLE_FILE} and {SUMS_FILE} disagree on {name}.", file=name
            )
    return bundle


def _history_file(calibrated_bundle: Path, weights: Path) -> Path:
    """The run's history: beside the calibrated bundle, else beside the weights."""
    for folder in (calibrated_bundle, weights.parent):
        if (folder / HISTORY_FILE).is_file():
            return folder / HISTORY_FILE
    return calibrated_bundle / HISTORY_FILE


def _card_inputs(
    bundle: Bundle, out_dir: Path, limitations: Path | None, trained_on: str
) -> CardInputs:
    def read(name: str) -> Any:
        return json.loads((out_dir / name).read_text(encoding="utf-8"))

    if limitations is not None and not limitations.is_file():
        raise InputNotFoundError(f"{limitations} does not exist.", path=str(limitations))
    return CardInputs(
        bundle=bundle,
        metrics=read(METRICS_FILE),
        calibration=read(CALIBRATION_FILE),
        history=read(HISTORY_FILE),
        weights_sha256=bundle.checksums[WEIGHTS_FILE],
        limitations=limitations.read_text(encoding="utf-8") if limitations else "",
        trained_on=trained_on,
        export_report=read(EXPORT_REPORT_FILE)
        if (out_dir / EXPORT_REPORT_FILE).is_file()
        else None,
    )


def _write_sums(out_dir: Path) -> None:
    names = sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name != SUMS_FILE)
    lines = [f"{sha256_file(out_dir / name)}  {name}" for name in names]
    (out_dir / SUMS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
