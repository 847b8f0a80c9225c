"""Fixtures: tiny datasets written in exactly each public layout, in temporary folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.datasets.layouts import (
    LUNA_UIDS,
    affine_lps,
    body_with_nodules,
    write_mhd,
    write_nifti,
)


@pytest.fixture
def msd_task(tmp_path: Path) -> Path:
    """A Task06_Lung-like folder with three cases (one without nodules)."""
    root = tmp_path / "Task06_Lung"
    image, label = body_with_nodules()
    training = []
    for n, mask in enumerate([label, label, np.zeros_like(label)], start=1):
        name = f"lung_{n:03d}.nii.gz"
        write_nifti(root / "imagesTr" / name, image, affine_lps())
        write_nifti(root / "labelsTr" / name, mask, affine_lps())
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(
        json.dumps({"name": "Lung", "training": training, "test": []}), encoding="utf-8"
    )
    return root


@pytest.fixture
def luna_folder(tmp_path: Path) -> Path:
    """Two scans in subset0/subset1 and an annotations.csv with two nodules on the first."""
    root = tmp_path / "LUNA16"
    image, _ = body_with_nodules()
    for n, uid in enumerate(LUNA_UIDS):
        write_mhd(root / f"subset{n}" / f"{uid}.mhd", image, affine_lps())
    centre = affine_lps() @ np.array([9.5, 9.5, 6.0, 1.0])
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    rows.append(f"{LUNA_UIDS[0]},{centre[0]},{centre[1]},{centre[2]},4.0")
    rows.append(f"{LUNA_UIDS[0]},-2.0,5.0,-20.0,6.5")
    rows.append("1.2.3.not.downloaded,0,0,0,5.0")
    (root / "annotations.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
