"""Seeded synthetic chest-CT studies with exact ground truth.

The generator draws a scanner protocol, a chest phantom (body wall, ribs, spine, mediastinum,
heart, lungs with branching vessel and airway trees, table) and 0-4 lung lesions per study, renders
them in Hounsfield units and writes each study as a real DICOM CT series with its label mask
(NIfTI and DICOM SEG), a lesion list and an entry in a dataset manifest. Study ``i`` depends only on
``(config, seed, i)``, so the number of worker processes never changes a byte of the output.

The names below are imported on first use (PEP 562): every ``basira`` command registers
``basira synth`` from this package, and the generator's imports (about 1 s) should not delay
``basira predict`` or ``--help``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.synth.config import SynthConfig, load_synth_config
    from pipelines.synth.dataset import generate_dataset
    from pipelines.synth.study import SynthStudy, generate_study

_HOMES = {
    "SynthConfig": "config",
    "load_synth_config": "config",
    "generate_dataset": "dataset",
    "SynthStudy": "study",
    "generate_study": "study",
}


def __getattr__(name: str) -> Any:
    """Import an exported name from the submodule that defines it, on first access."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SynthConfig", "SynthStudy", "generate_dataset", "generate_study", "load_synth_config"]
