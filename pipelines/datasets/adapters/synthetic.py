"""Basira's own synthetic studies: ``DIR/manifest.json`` written by ``basira synth``.

::

    DIR/
      manifest.json            # Manifest, source "synthetic", split None
      case_0000/dicom/CT00001.dcm ...
      case_0000/label.nii.gz   # lesion mask on the CT grid
      case_0000/seg.dcm        # the same mask as DICOM SEG
      case_0000/lesions.json

The manifest is already in the one format; importing only proves every file it names exists.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets.adapters.checks import require_files
from pipelines.datasets.manifest import Manifest, read_manifest
from pipelines.errors import InvalidLayoutError


def import_synthetic(src: Path) -> Manifest:
    """Read ``src/manifest.json`` and check its images and labels exist (paths relative to src).

    Raises:
        InvalidLayoutError: no manifest.json, or files it names are missing.
        ConfigError: manifest.json does not validate.
    """
    index = src / "manifest.json"
    if not index.is_file():
        raise InvalidLayoutError(
            f"{src} holds no manifest.json; is it the --out folder of `basira synth`?",
            path=str(src),
        )
    manifest = read_manifest(index)
    named: list[str] = []
    for case in manifest.cases:
        named.append(case.image)
        if case.label is not None:
            named.append(case.label)
    require_files(src, named)
    return manifest
