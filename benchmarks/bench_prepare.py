"""Prepare one typical chest CT (512 x 512 x 250 at 0.7 x 0.7 x 1.25 mm, MSD-style .nii.gz).

Measured: reading the image (the floor any preparation pays), the shared preprocessing
(:func:`pipelines.transforms.preprocess_volume`: torch trilinear resampling to 1 x 1 x 1.5 mm,
body crop, window), writing the cache, and ``prepare_manifest`` end to end (read + label +
preprocess + cache). Baseline in the same run: the same resampling done with
``scipy.ndimage.zoom(order=1)``, the common choice in nnU-Net/MONAI-era scripts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from benchmarks.common import median_seconds, print_table
from pipelines.datasets.images import load_image
from pipelines.datasets.manifest import ImageFormat
from pipelines.datasets.prepare import PrepareConfig, prepare_manifest
from pipelines.transforms import PreprocessConfig, preprocess_volume

SPACING_MM = (0.7, 0.7, 1.25)  # (i, j, k)


def _write_study(root: Path, shape: tuple[int, int, int]) -> Path:
    """An MSD-like task folder with one chest-like study and a one-nodule label."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = (j - shape[1] / 2) ** 2 / 0.6 + (i - shape[2] / 2) ** 2 < (shape[2] / 2.4) ** 2
    volume = np.where(body, 20, -1000) + rng.normal(0, 15, shape)
    label = ((k - shape[0] / 2) ** 2 + (j - shape[1] / 3) ** 2 + (i - shape[2] / 3) ** 2) < 36
    affine_ras = np.diag([-SPACING_MM[0], -SPACING_MM[1], SPACING_MM[2], 1.0])
    for folder, array, dtype in (("imagesTr", volume, np.int16), ("labelsTr", label, np.uint8)):
        (root / folder).mkdir(parents=True)
        image = nib.Nifti1Image(np.transpose(array.astype(dtype), (2, 1, 0)), affine_ras)
        nib.save(image, str(root / folder / "ct_001.nii.gz"))
    manifest = {
        "name": "bench",
        "source": "msd",
        "cases": [
            {
                "case_id": "ct_001",
                "patient_id": "ct_001",
                "image": "imagesTr/ct_001.nii.gz",
                "image_format": "nifti",
                "label": "labelsTr/ct_001.nii.gz",
                "label_format": "nifti",
                "source": "msd",
            }
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json"


def _scipy_resample(array: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    factors = [SPACING_MM[2 - a] / config.target_spacing_mm[2 - a] for a in range(3)]
    return ndimage.zoom(array, factors, order=1, grid_mode=True, mode="nearest")


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick`` uses a small study for smoke tests)."""
    shape = (40, 96, 96) if quick else (250, 512, 512)
    repeats = 1 if quick else 2
    config = PreprocessConfig()
    with tempfile.TemporaryDirectory(prefix="basira-bench-") as tmp:
        manifest = _write_study(Path(tmp) / "task", shape)
        image_path = manifest.parent / "imagesTr" / "ct_001.nii.gz"
        volume = load_image(image_path, ImageFormat.NIFTI)
        prepared = preprocess_volume(volume, config)
        times = {
            "read .nii.gz (floor)": median_seconds(
                lambda: load_image(image_path, ImageFormat.NIFTI), repeats
            ),
            "preprocess (torch)": median_seconds(
                lambda: preprocess_volume(volume, config), repeats
            ),
            "resample only, scipy zoom (baseline)": median_seconds(
                lambda: _scipy_resample(volume.array_hu, config), repeats
            ),
            "write cache (float16 npz)": median_seconds(
                lambda: np.savez(Path(tmp) / "c.npz", image=prepared.array.astype(np.float16)),
                repeats,
            ),
            "prepare end to end": median_seconds(
                lambda: prepare_manifest(manifest, Path(tmp) / "out", PrepareConfig()), repeats
            ),
        }
    floor = times["read .nii.gz (floor)"]
    label = f"{shape[2]}x{shape[1]}x{shape[0]}"
    return [
        {"study": label, "step": step, "seconds": s, "x read": s / floor}
        for step, s in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small study (smoke test)")
    args = parser.parse_args()
    print_table("Prepare one CT study (read + preprocess + cache)", run(quick=args.quick))


if __name__ == "__main__":
    main()
