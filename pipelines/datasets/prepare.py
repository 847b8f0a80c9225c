"""Preprocess every case of a manifest once and cache it for training and evaluation.

``prepare_manifest(manifest.json, DIR, config)`` writes::

    DIR/
      manifest.json          # the manifest used, split assigned, paths relative to DIR
      prepared.json          # PreparedIndex: per case its cache file, shape, spacing, split
      cases/<case_id>.npz    # image (float16|float32, [0, 1]), label (uint8), affine_lps,
                             # geometry (JSON), lesions (JSON, with centre_ijk in the output grid)

Images go through :func:`pipelines.transforms.preprocess_volume`, the definition inference uses.
A case with a label file gets it through :func:`~pipelines.transforms.preprocess_label`; a case
with lesions but no label (LUNA16) gets spheres rasterised on the output grid. A case that cannot
be read is recorded in ``prepared.json`` ``failures`` with its error code; the others are cached.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.config import load_config, validate_config
from pipelines.datasets.adapters.checks import relocate
from pipelines.datasets.images import load_image, load_label
from pipelines.datasets.lesions import rasterise_spheres
from pipelines.datasets.manifest import Case, Manifest, Split, read_manifest, write_manifest
from pipelines.datasets.splits import SplitConfig, assign_splits
from pipelines.errors import (
    BasiraError,
    EmptySplitError,
    InputNotFoundError,
    PreprocessMismatchError,
)
from pipelines.transforms import PreprocessConfig, preprocess_label, preprocess_volume

PREPARED_SCHEMA_VERSION = "1.0"


class PrepareConfig(BaseModel):
    """``params.yaml`` section ``prepare``: how a manifest is split, preprocessed and cached.

    ``split`` is a :class:`SplitConfig` to (re)assign splits by patient hash, one split name
    (``test``) to put every case in that split (a held-out test set prepared on its own), or
    None to keep the manifest's own splits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    split: SplitConfig | Split | None = None
    cache_dtype: Literal["float16", "float32"] = "float16"


class PreparedCase(BaseModel):
    """One cached case, as listed in ``prepared.json``."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    patient_id: str
    split: Split | None
    cache: str  # relative to prepared.json's folder
    shape_kji: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    n_lesions: int
    has_lesion: bool


class PrepareFailure(BaseModel):
    """A case that could not be prepared, and why."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    code: str
    message: str


class PreparedIndex(BaseModel):
    """``prepared.json``: the cache's table of contents."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = PREPARED_SCHEMA_VERSION
    name: str
    manifest: str = "manifest.json"
    config: PrepareConfig
    cases: list[PreparedCase] = Field(default_factory=list)
    failures: list[PrepareFailure] = Field(default_factory=list)


def load_prepare_config(path: Path | None, section: str = "prepare") -> PrepareConfig:
    """Read :class:`PrepareConfig` from the dotted ``section`` of a YAML file (defaults if None).

    Raises:
        InputNotFoundError: ``path`` does not exist.
        ConfigError: invalid YAML, a missing section, or a field that does not validate.
    """
    if path is None:
        return PrepareConfig()
    return load_config(path, PrepareConfig, what="Params file", section=section)


def prepare_manifest(
    manifest_path: Path,
    out_dir: Path,
    config: PrepareConfig,
    *,
    on_case: Callable[[str], None] | None = None,
) -> PreparedIndex:
    """Cache every case of ``manifest_path`` under ``out_dir`` (see module docstring).

    ``on_case`` is called with each case id once it is done (for progress bars).

    Raises:
        InputNotFoundError, ConfigError: the manifest cannot be read. Per-case errors are
            recorded in the returned index, not raised.
    """
    manifest = read_manifest(manifest_path)
    if isinstance(config.split, SplitConfig):
        manifest = assign_splits(manifest, config.split)
    elif config.split is not None:
        cases = [case.model_copy(update={"split": config.split}) for case in manifest.cases]
        manifest = manifest.model_copy(update={"cases": cases})
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    write_manifest(relocate(manifest, manifest_path.parent, out_dir), out_dir / "manifest.json")
    index = PreparedIndex(name=manifest.name, config=config)
    for case in manifest.cases:
        try:
            index.cases.append(_prepare_case(manifest, manifest_path, case, out_dir, config))
        except BasiraError as exc:
            index.failures.append(
                PrepareFailure(case_id=case.case_id, code=exc.code, message=exc.message)
            )
        if on_case is not None:
            on_case(case.case_id)
    text = index.model_dump_json(indent=2) + "\n"
    (out_dir / "prepared.json").write_text(text, encoding="utf-8")
    return index


def read_prepared_index(data_dir: Path) -> PreparedIndex:
    """Read ``data_dir/prepared.json``.

    Raises:
        InputNotFoundError: there is no ``prepared.json`` (run ``basira prepare`` first).
        ConfigError: the file does not validate.
    """
    path = data_dir / "prepared.json"
    if not path.is_file():
        raise InputNotFoundError(
            f"{path} does not exist; run 'basira prepare' first.", path=str(path)
        )
    return validate_config(path.read_text(encoding="utf-8"), PreparedIndex, path)


def cases_of_split(index: PreparedIndex, split: Split) -> list[PreparedCase]:
    """The prepared cases of ``split``, in index order.

    Raises:
        EmptySplitError: the split holds no case (training needs train and val cases,
            evaluation and calibration the split they run on).
    """
    cases = [case for case in index.cases if case.split == split]
    if not cases:
        raise EmptySplitError(
            f"The prepared data '{index.name}' has no '{split}' cases.", split=str(split)
        )
    return cases


def check_preprocess(index: PreparedIndex, preprocess: PreprocessConfig, model_name: str) -> None:
    """Refuse a cache prepared with other preprocessing than a model's contract
    (``preprocess``, the bundle's).

    Raises:
        PreprocessMismatchError: naming the fields that differ.
    """
    cached = index.config.preprocess.model_dump(mode="json")
    wanted = preprocess.model_dump(mode="json")
    differing = sorted(key for key in wanted if cached.get(key) != wanted[key])
    if differing:
        raise PreprocessMismatchError(
            f"The prepared data was preprocessed differently from model '{model_name}' "
            f"({', '.join(differing)}); re-run 'basira prepare' with the bundle's preprocess.",
            fields=differing,
        )


def load_prepared_case(path: Path) -> dict[str, Any]:
    """Read a cached ``.npz`` back: arrays as numpy, ``geometry`` and ``lesions`` as JSON data."""
    with np.load(path, allow_pickle=False) as data:
        case = {key: data[key] for key in data.files}
    case["geometry"] = json.loads(str(case["geometry"]))
    case["lesions"] = json.loads(str(case["lesions"]))
    return case


def source_slice_thicknesses(data_dir: Path) -> dict[str, float | None]:
    """Per case id, the source series' slice thickness from the cache's ``manifest.json`` (empty
    when it has none): evaluation reports by it, and inserted training lesions take their
    partial volume from it."""
    path = data_dir / "manifest.json"
    if not path.is_file():
        return {}
    return {case.case_id: case.slice_thickness_mm for case in read_manifest(path).cases}


def _prepare_case(
    manifest: Manifest, manifest_path: Path, case: Case, out_dir: Path, config: PrepareConfig
) -> PreparedCase:
    volume = load_image(manifest.resolve(manifest_path, case.image), case.image_format)
    prepared = preprocess_volume(volume, config.preprocess)
    geometry = prepared.geometry
    if case.label is not None and case.label_format is not None:
        source_label = load_label(
            manifest.resolve(manifest_path, case.label), case.label_format, volume
        )
        label = preprocess_label(source_label, geometry)
    else:
        label = rasterise_spheres(case.lesions, geometry.shape, geometry.affine_lps)
    lesions = [
        {
            **lesion.model_dump(mode="json"),
            "center_ijk": [
                round(float(v), 3)
                for v in geometry.lps_to_output_ijk(np.asarray(lesion.center_lps_mm))
            ],
        }
        for lesion in case.lesions
    ]
    relative = f"cases/{case.case_id}.npz"
    _save_npz(
        out_dir / relative,
        image=prepared.array.astype(config.cache_dtype),
        label=label,
        affine_lps=geometry.affine_lps,
        geometry=np.array(json.dumps(geometry.to_dict())),
        lesions=np.array(json.dumps(lesions)),
    )
    return PreparedCase(
        case_id=case.case_id,
        patient_id=case.patient_id,
        split=case.split,
        cache=relative,
        shape_kji=geometry.shape,
        spacing_mm=geometry.spacing_mm,
        n_lesions=len(case.lesions),
        has_lesion=case.has_lesion,
    )


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write atomically, so an interrupted run never leaves a cache file that looks complete."""
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **arrays)  # type: ignore[arg-type]
    os.replace(partial, path)
