"""Read a 512x512x300 uncompressed CT series into a float32 HU volume.

Baselines in the same run: the physical floor (the same pixel bytes read with numpy into a
preallocated array, no parsing) and SimpleITK's ImageSeriesReader on the same files. Then RLE and
JPEG 2000 versions of the series, against pydicom's decoding of the same files.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median_seconds, print_table
from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.header import parse_header
from pipelines.dicom.volume import ReadPolicy, read_series_volume
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series

RLE, J2K = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"


def _write(out: Path, shape: tuple[int, int, int], syntax: str) -> list[Path]:
    rng = np.random.default_rng(0)
    j, i = np.ogrid[: shape[1], : shape[2]]
    body = (j - shape[1] / 2) ** 2 + (i - shape[2] / 2) ** 2 < (shape[1] / 2.3) ** 2
    volume = np.where(body, 0.0, -1000.0).astype(np.float32)[None] + rng.normal(0, 15, shape)
    affine = affine_from_dicom((1, 0, 0, 0, 1, 0), (0.7, 0.7), (-180, -180, 0), (0, 0, 1.0))
    return write_ct_series(
        volume, affine, out, CTSeriesInfo(uid_seed=str(out)), transfer_syntax=syntax
    )


def _floor(paths: list[Path], shape: tuple[int, int, int]) -> None:
    """The same pixel bytes read into a preallocated array, offsets known in advance."""
    offsets = [parse_header(p)[1].pixel_data_offset for p in paths]
    out = np.empty(shape, np.uint16)

    def read() -> None:
        for k, (path, offset) in enumerate(zip(paths, offsets, strict=True)):
            with open(path, "rb") as fh:
                fh.seek(offset)
                fh.readinto(memoryview(out[k]).cast("B"))

    return read  # type: ignore[return-value]


def _simpleitk(folder: Path) -> Any:
    import SimpleITK as sitk

    def read() -> np.ndarray:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        reader.SetOutputPixelType(sitk.sitkFloat32)
        return sitk.GetArrayFromImage(reader.Execute())

    return read


def _decode_only(paths: list[Path]) -> Any:
    """pydicom's own decoding of every file, one after another: the decoder's cost alone."""
    import pydicom

    def decode() -> None:
        for path in paths:
            _ = pydicom.dcmread(path).pixel_array

    return decode


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick`` uses a tiny series for smoke tests)."""
    shape = (12, 64, 64) if quick else (300, 512, 512)
    repeats = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="basira-bench-") as tmp:
        native = _write(Path(tmp) / "native", shape, "1.2.840.10008.1.2.1")
        floor = median_seconds(_floor(native, shape), repeats)  # type: ignore[arg-type]
        stored, hu = np.zeros(shape, np.uint16), np.empty(shape, np.float32)
        convert = median_seconds(lambda: np.subtract(stored, 1024, out=hu, dtype=np.float32), 3)
        basira = median_seconds(lambda: read_series_volume(native), repeats)
        sitk = median_seconds(_simpleitk(Path(tmp) / "native"), repeats)
        mb = sum(p.stat().st_size for p in native) / 1e6
        rows.append(
            {
                "series": f"uncompressed {mb:.0f} MB",
                "reader": "numpy floor",
                "seconds": floor,
                "x floor": 1.0,
            }
        )
        rows.append(
            {
                "series": "uncompressed",
                "reader": "floor + float32 HU conversion",
                "seconds": floor + convert,
                "x floor": (floor + convert) / floor,
            }
        )
        rows.append(
            {
                "series": "uncompressed",
                "reader": "basira",
                "seconds": basira,
                "x floor": basira / floor,
            }
        )
        rows.append(
            {
                "series": "uncompressed",
                "reader": "SimpleITK",
                "seconds": sitk,
                "x floor": sitk / floor,
            }
        )
        for name, syntax in (("RLE", RLE), ("JPEG 2000", J2K)):
            paths = _write(Path(tmp) / name, shape, syntax)
            decoded = median_seconds(_decode_only(paths), repeats)
            rows.append(
                {
                    "series": name,
                    "reader": "pydicom decode only, one process (baseline)",
                    "seconds": decoded,
                    "x floor": decoded / floor,
                }
            )
            for workers in (1, 2):
                seconds = median_seconds(
                    lambda p=paths, w=workers: read_series_volume(p, ReadPolicy(workers=w)),
                    repeats,
                )
                rows.append(
                    {
                        "series": name,
                        "reader": f"basira, {workers} worker(s)",
                        "x baseline": seconds / decoded,
                        "seconds": seconds,
                        "x floor": seconds / floor,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny series (smoke test)")
    args = parser.parse_args()
    print_table("DICOM series read (float32 HU volume)", run(quick=args.quick))


if __name__ == "__main__":
    main()
