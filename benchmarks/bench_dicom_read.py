"""Read a 512x512x300 uncompressed CT series into a float32 HU volume.

Baselines in the same run: the physical floor (the same pixel bytes read with numpy into a
preallocated array, no parsing) and SimpleITK's ImageSeriesReader on the same files. Two more
rows bound what any reader of a fresh float32 volume pays: the int16 to float32 conversion alone,
and the page faults of allocating and first touching a volume of that size. The floor, the bounds
and Basira run in turns, so that they share the machine's load. Then RLE and JPEG 2000 versions
of the series, against pydicom's decoding of the same files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median_seconds, print_table
from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.header import parse_header
from pipelines.dicom.read import ReadPolicy, read_series_volume
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


def _fresh_volume(shape: tuple[int, int, int]) -> Any:
    """A float32 volume of ``shape`` allocated and first touched: the page faults alone."""

    def touch() -> None:
        volume = np.empty(shape, np.float32)
        volume.reshape(-1)[:: 4096 // 4] = 0

    return touch


def _interleaved_medians(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turns so that all share the machine's load."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _uncompressed(tmp: Path, shape: tuple[int, int, int], repeats: int) -> list[dict[str, Any]]:
    native = _write(tmp / "native", shape, "1.2.840.10008.1.2.1")
    stored, hu = np.zeros(shape, np.uint16), np.empty(shape, np.float32)
    seconds = _interleaved_medians(
        {
            "floor": _floor(native, shape),
            "convert": lambda: np.subtract(stored, 1024, out=hu, dtype=np.float32),
            "fresh": _fresh_volume(shape),
            "basira": lambda: read_series_volume(native),
        },
        repeats,
    )
    floor = seconds["floor"]
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"
    mb = sum(p.stat().st_size for p in native) / 1e6
    rows = [
        (f"uncompressed {mb:.0f} MB", "numpy floor", floor),
        ("uncompressed", "floor + float32 HU conversion", floor + seconds["convert"]),
        ("uncompressed", "fresh float32 volume, page faults only", seconds["fresh"]),
        ("uncompressed", "basira", seconds["basira"]),
        ("uncompressed", "SimpleITK", median_seconds(_simpleitk(tmp / "native"), 3)),
    ]
    table = [
        {"series": series, "reader": reader, "seconds": sec, "x floor": sec / floor}
        for series, reader, sec in rows
    ]
    table[0]["load (1 min)"] = load
    return table


def _compressed(tmp: Path, shape: tuple[int, int, int], repeats: int, floor: float) -> list[Any]:
    rows: list[dict[str, Any]] = []
    for name, syntax in (("RLE", RLE), ("JPEG 2000", J2K)):
        paths = _write(tmp / name, shape, syntax)
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


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick`` uses a tiny series for smoke tests)."""
    shape = (12, 64, 64) if quick else (300, 512, 512)
    with tempfile.TemporaryDirectory(prefix="basira-bench-") as tmp:
        rows = _uncompressed(Path(tmp), shape, 1 if quick else 9)
        return rows + _compressed(Path(tmp), shape, 1 if quick else 3, rows[0]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny series (smoke test)")
    args = parser.parse_args()
    print_table("DICOM series read (float32 HU volume)", run(quick=args.quick))


if __name__ == "__main__":
    main()
