"""Layout adapters: each public dataset layout → the one manifest format.

An adapter is a function ``src folder → Manifest`` with case paths relative to ``src``;
:func:`import_dataset` picks it by name from :data:`IMPORTERS`, assigns splits and writes the
manifest with paths relative to the manifest's own folder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from pipelines.datasets.adapters.checks import relocate
from pipelines.datasets.adapters.dicom_seg import import_dicom_seg
from pipelines.datasets.adapters.luna16 import import_luna16
from pipelines.datasets.adapters.msd import import_msd
from pipelines.datasets.adapters.synthetic import import_synthetic
from pipelines.datasets.manifest import Manifest, write_manifest
from pipelines.datasets.splits import SplitConfig, assign_splits
from pipelines.errors import InputNotFoundError, InvalidLayoutError

__all__ = ["IMPORTERS", "Layout", "import_dataset"]


class Layout(StrEnum):
    """The source layouts ``basira dataset import --layout`` understands."""

    SYNTHETIC = "synthetic"
    MSD = "msd"
    LUNA16 = "luna16"
    DICOM_SEG = "dicom-seg"


IMPORTERS: dict[Layout, Callable[[Path], Manifest]] = {
    Layout.SYNTHETIC: import_synthetic,
    Layout.MSD: import_msd,
    Layout.LUNA16: import_luna16,
    Layout.DICOM_SEG: import_dicom_seg,
}


def import_dataset(
    layout: Layout, src: Path, out: Path, *, split: SplitConfig | None = None
) -> Manifest:
    """Convert the dataset at ``src`` to a manifest written at ``out``; split it if asked.

    Raises:
        InputNotFoundError: ``src`` is not a folder.
        InvalidLayoutError: ``src`` does not follow ``layout``, or two cases share an id.
    """
    if not src.is_dir():
        raise InputNotFoundError(f"Dataset folder {src} does not exist.", path=str(src))
    manifest = IMPORTERS[layout](src)
    duplicated = [cid for cid, n in Counter(c.case_id for c in manifest.cases).items() if n > 1]
    if duplicated:
        raise InvalidLayoutError(
            f"Case ids are not unique in {src}: {', '.join(duplicated[:5])}.",
            duplicated=duplicated[:5],
        )
    if split is not None:
        manifest = assign_splits(manifest, split)
    manifest = relocate(manifest, src, out.parent)
    write_manifest(manifest, out)
    return manifest
