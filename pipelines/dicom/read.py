"""Build one HU volume from one CT series: ordered, checked, decoded and rescaled.

This is the only way pixels enter Basira from DICOM: training data, inference and the review
viewer all read through :func:`read_series_volume`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.dicom.geometry import GeometryTolerances
from pipelines.dicom.header import InstanceHeader
from pipelines.dicom.hu import to_hu
from pipelines.dicom.index import DicomIndex, SeriesEntry, build_index, index_inputs
from pipelines.dicom.native import fill_native, new_scratch
from pipelines.dicom.parallel import (
    MIN_FRAMES_FOR_PROCESSES,
    Placed,
    contiguous_runs,
    fill_with_processes,
    shutdown_pool,
)
from pipelines.dicom.pixels import is_fast_native, read_stored_frames
from pipelines.dicom.selection import SelectionRules, check_content, series_placements
from pipelines.dicom.singlepass import PrefilledVolume, read_folder_once
from pipelines.errors import (
    MissingAttributeError,
    MixedSeriesError,
    NoDicomFoundError,
    VolumeTooLargeError,
)
from pipelines.volume import Provenance, Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReadPolicy:
    """How strictly a series is read and how much it may cost."""

    geometry: GeometryTolerances = field(default_factory=GeometryTolerances)
    #: refuse volumes whose float32 array would exceed this many bytes
    max_volume_bytes: int = 4 * 1024**3
    #: threads (native pixels) or processes (compressed pixels); None uses every core
    workers: int | None = None


def read_series_volume(
    source: SeriesEntry | Path | Sequence[Path], policy: ReadPolicy | None = None
) -> Volume:
    """Read one CT series into a :class:`Volume` (float32 HU, ``[k, j, i]``, LPS affine).

    ``source`` is an indexed series, a folder holding exactly one series, or that series' files.
    A folder or file list is read in one pass where it can be (:mod:`.singlepass`), through the
    general index otherwise; both apply the same checks and give the same volume.

    Raises:
        NoDicomFoundError: nothing readable was given.
        MixedSeriesError: the files hold more than one series.
        NotCTError, ColourImageError, NotHounsfieldError, NotAnImageError: not a CT HU image.
        TooFewSlicesError, InconsistentGeometryError, DuplicateSlicesError, MissingSlicesError,
        NonUniformSpacingError, GantryTiltError: the slices do not form one regular volume.
        VolumeTooLargeError: past ``policy.max_volume_bytes``.
        UnsupportedTransferSyntaxError, UndecodablePixelDataError: pixels cannot be decoded.
    """
    policy = policy or ReadPolicy()
    if isinstance(source, SeriesEntry):
        return _read(source, policy)
    paths = [source] if isinstance(source, Path) else list(source)
    rules = SelectionRules(geometry=policy.geometry)
    once = read_folder_once(
        paths, workers=_workers(policy), max_volume_bytes=policy.max_volume_bytes
    )
    if once is not None:
        series = _only_series(build_index(once.headers, once.rejected, rules))
        return _read(series, policy, once.prefilled)
    with tempfile.TemporaryDirectory(prefix="basira-read-") as workdir:
        series = _only_series(index_inputs(paths, workdir=Path(workdir), rules=rules))
        return _read(series, policy)


def _workers(policy: ReadPolicy) -> int:
    return max(1, policy.workers or os.cpu_count() or 1)


def _only_series(index: DicomIndex) -> SeriesEntry:
    series = [s for study in index.studies for s in study.series]
    if not series:
        first = index.rejected_files[0] if index.rejected_files else None
        raise NoDicomFoundError(
            "No readable DICOM image was found"
            + (f" ({first.path}: {first.message})" if first else "."),
            rejected=[r.code for r in index.rejected_files[:20]],
        )
    if len(series) > 1:
        raise MixedSeriesError(
            f"The input holds {len(series)} series; give the files of one series.",
            series_instance_uids=[s.series_instance_uid for s in series],
        )
    return series[0]


def _read(
    series: SeriesEntry, policy: ReadPolicy, prefilled: PrefilledVolume | None = None
) -> Volume:
    """Check ``series`` and build its volume (from ``prefilled`` if its slots prove right)."""
    instances = series.instances
    check_content(instances[0])
    frames = [(inst, f) for inst in instances for f in range(inst.n_frames)]
    if len(series_placements(instances)) != len(frames):
        raise MissingAttributeError(
            "Some slices lack ImagePositionPatient, ImageOrientationPatient or PixelSpacing."
        )
    stacked = series.stacked_geometry(policy.geometry)
    shape = (len(frames), instances[0].rows, instances[0].columns)
    needed = math.prod(shape) * 4
    if needed > policy.max_volume_bytes:
        raise VolumeTooLargeError(
            f"The series needs {needed / 2**30:.1f} GiB; the limit is "
            f"{policy.max_volume_bytes / 2**30:.1f} GiB.",
            shape=list(shape),
        )
    ordered = [frames[i] for i in stacked.order]
    slot = {(id(inst), f): k for k, (inst, f) in enumerate(ordered)}
    placed = sorted(
        ((inst, tuple(slot[(id(inst), f)] for f in range(inst.n_frames))) for inst in instances),
        key=lambda item: item[1][0],
    )
    taken = prefilled.take(placed, shape) if prefilled is not None else None
    volume, defaults = taken if taken is not None else _fill(placed, shape, policy)
    for note in sorted(set(defaults))[:5]:
        log.warning("default applied: %s", note)
    return Volume(volume, stacked.affine_lps.copy(), _provenance(instances, ordered, defaults))


def _fill(
    placed: Sequence[Placed], shape: tuple[int, int, int], policy: ReadPolicy
) -> tuple[np.ndarray, list[str]]:
    """The float32 HU volume from every instance (in slice order), and the defaults applied.

    Native pixels: threads, each filling one contiguous run of slices in cache-sized chunks
    (:mod:`.native`; reads and the HU conversion release the GIL; threads writing neighbouring
    slices contended for the same fresh pages and were no faster than one). Compressed pixels:
    worker processes (:mod:`pipelines.dicom.parallel`), since the decoders hold the GIL.
    """
    workers = min(_workers(policy), len(placed))
    native = all(is_fast_native(inst) for inst, _ in placed)
    if not native and workers > 1 and shape[0] >= MIN_FRAMES_FOR_PROCESSES:
        try:
            return fill_with_processes(placed, shape, _fill_one, workers)
        except BrokenProcessPool:
            shutdown_pool()
            log.warning(
                "decoding workers could not start (a script without an "
                "`if __name__ == '__main__':` guard?); decoding in this process instead"
            )
    volume = np.empty(shape, dtype=np.float32)
    if not native:
        return volume, [n for inst, ks in placed for n in _fill_one(inst, [volume[k] for k in ks])]

    def fill_run(run: Sequence[Placed]) -> list[str]:
        scratch = new_scratch()
        notes: list[str] = []
        for inst, slices in run:
            with open(inst.path, "rb", buffering=0) as fh:
                notes += fill_native(fh, inst, [volume[k] for k in slices], scratch)
        return notes

    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = pool.map(fill_run, contiguous_runs(placed, workers))
        notes = [note for run_notes in runs for note in run_notes]
    return volume, notes


def _fill_one(inst: InstanceHeader, targets: list[np.ndarray]) -> list[str]:
    """Decode one instance into its slices (module level: worker processes run it)."""
    return to_hu(read_stored_frames(inst), inst, targets)


def _provenance(
    instances: Sequence[InstanceHeader],
    ordered: Sequence[tuple[InstanceHeader, int]],
    defaults: Sequence[str],
) -> Provenance:
    first = instances[0]
    return Provenance(
        source_format="dicom",
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        frame_of_reference_uid=first.frame_of_reference_uid,
        modality=first.modality,
        sop_instance_uids=tuple(inst.sop_instance_uid for inst, _ in ordered),
        frame_numbers=tuple(f + 1 for _, f in ordered),
        transfer_syntaxes=tuple(sorted({inst.transfer_syntax_uid for inst in instances})),
        slice_thickness_mm=first.slice_thickness_mm,
        defaults_applied=tuple(sorted(set(defaults))),
    )
