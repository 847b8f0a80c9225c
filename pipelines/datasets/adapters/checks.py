"""Checks shared by the layout adapters: files exist, paths are written relative and portable."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipelines.datasets.manifest import Manifest
from pipelines.errors import InvalidLayoutError

#: How many missing files an error message lists before summarising.
MAX_LISTED = 5


def require_files(root: Path, relative_paths: Iterable[str]) -> None:
    """Refuse a layout where any of ``relative_paths`` (files or non-empty folders) is missing.

    Raises:
        InvalidLayoutError: naming the first missing paths and how many there are.
    """
    missing = [rel for rel in relative_paths if not _present(root / rel)]
    if missing:
        listed = ", ".join(missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise InvalidLayoutError(
            f"{len(missing)} file(s) the dataset names are missing in {root}: {listed}{more}.",
            root=str(root),
            missing=missing[:MAX_LISTED],
            n_missing=len(missing),
        )


def relocate(manifest: Manifest, from_dir: Path, to_dir: Path) -> Manifest:
    """Rewrite case paths relative to ``from_dir`` as paths relative to ``to_dir``."""

    def move(relative: str | None) -> str | None:
        if relative is None:
            return None
        target = (from_dir / relative).resolve()
        return Path(os.path.relpath(target, to_dir.resolve())).as_posix()

    cases = [
        case.model_copy(update={"image": move(case.image), "label": move(case.label)})
        for case in manifest.cases
    ]
    return manifest.model_copy(update={"cases": cases})


def _present(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.is_file()
