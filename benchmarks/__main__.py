"""Run every benchmark (``python -m benchmarks [--quick] [NAME ...]``) and print their tables."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from benchmarks.common import print_table

BENCHMARKS = {
    "dicom_read": "DICOM series read (float32 HU volume)",
    "synth": "Synthetic study generation",
    "prepare": "Prepare one study (read + preprocess + cache)",
    "train": "Training throughput on CPU (shipped bundle and stage 2: train step vs forward)",
    "predict": "Predict one study (DICOM to all outputs)",
    "service": "Service under load (8 clients on loopback)",
    "ui": "Review viewer in Chromium (first image, scrolling; 512×512×300 series)",
    "candidates": "Nodule candidates: recall by budget, CPU seconds a scan (issue 14, stage 1)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny inputs (smoke test)")
    parser.add_argument("--data", type=Path, help="candidates: a prepared folder to measure on")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(f"benchmarks.bench_{name}")
        extra = {"data": args.data} if name == "candidates" else {}
        print_table(BENCHMARKS[name], module.run(quick=args.quick, **extra))


if __name__ == "__main__":
    main()
