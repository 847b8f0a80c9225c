"""Index and read a folder of one uncompressed series in a single pass over its files.

:func:`~pipelines.dicom.read.read_series_volume` must read every header before it knows the
slice order, which would open every file twice: once for its header, once for its pixels.
For the common input, a folder holding one series of native 16-bit single-frame slices named in
acquisition order, this pass opens each file once: it scans the header and, while the order is
not yet known, writes the slice's HU values where the file order predicts it belongs (file
names ascending or descending along the slice normal, judged from the first two files). The
files are shared between threads, so that one file's header parsing (Python, holding the GIL)
overlaps another's reading and rescaling (which release it).

Nothing is decided here. The headers are indexed, judged and stacked exactly as for any other
input, and the prefilled volume is used only if every slice of the checked stack landed in its
own slot; otherwise it is dropped and the pixels are read the ordinary way. Shuffled names,
several series, stray files, compressed or multi-frame files only cost that second read; an
archive stops the pass at once, for the index unpacks those.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.dicom.archive import is_zip_signature
from pipelines.dicom.header import InstanceHeader
from pipelines.dicom.index import RejectedFile, header_or_refusal, walk_files
from pipelines.dicom.native import fill_native, new_scratch
from pipelines.dicom.parallel import Placed, contiguous_runs
from pipelines.dicom.pixels import is_fast_native
from pipelines.errors import BasiraError

Outcome = InstanceHeader | RejectedFile


@dataclass(frozen=True)
class _Prediction:
    """Where file ``i`` of a folder goes if the folder is one series in file-name order."""

    volume: np.ndarray  # float32, (files, rows, columns)
    first: InstanceHeader
    ascending: bool

    def slot(self, i: int) -> int:
        return i if self.ascending else len(self.volume) - 1 - i

    def fits(self, header: InstanceHeader) -> bool:
        """True when ``header`` is a slice of the predicted series that can be read natively."""
        return (
            is_fast_native(header)
            and header.n_frames == 1
            and len(header.placements) == 1
            and header.series_instance_uid == self.first.series_instance_uid
            and (header.rows, header.columns) == (self.first.rows, self.first.columns)
        )


class PrefilledVolume:
    """A volume filled in predicted slots, given up once: to the reader if the slots prove right."""

    def __init__(
        self, prediction: _Prediction, filled: list[InstanceHeader | None], notes: list[list[str]]
    ) -> None:
        self._prediction: _Prediction | None = prediction
        self._filled = filled
        self._notes = notes

    def take(
        self, placed: Sequence[Placed], shape: tuple[int, int, int]
    ) -> tuple[np.ndarray, list[str]] | None:
        """The volume and its defaults if ``placed`` is exactly what was filled, else None.

        ``placed`` pairs each instance of the checked series with its slice index (in slice
        order), as the reader would fill them. Either way the volume is released from here.
        """
        prediction, self._prediction = self._prediction, None
        if prediction is None or prediction.volume.shape != shape or len(placed) != shape[0]:
            return None
        file_of = {id(header): i for i, header in enumerate(self._filled) if header is not None}
        notes: list[str] = []
        for inst, slices in placed:
            i = file_of.get(id(inst))
            if i is None or self._filled[i] is not inst or slices != (prediction.slot(i),):
                return None
            notes += self._notes[i]
        return prediction.volume, notes


@dataclass(frozen=True)
class OnePass:
    """Every file's header or refusal (in walk order), and the pixels read along the way."""

    headers: list[InstanceHeader]
    rejected: list[RejectedFile]
    prefilled: PrefilledVolume | None


class _ArchiveFound(Exception):
    """An input holds a zip archive: the general index must unpack it."""


def read_folder_once(
    inputs: Sequence[Path], *, workers: int, max_volume_bytes: int
) -> OnePass | None:
    """Headers of every file under ``inputs``, with pixels where file order predicts slice order.

    ``workers`` threads share the files; ``max_volume_bytes`` bounds the predicted volume (none
    is allocated past it). Returns None when an input holds a zip archive.

    Raises:
        InputNotFoundError: a given path does not exist.
        OSError: a file cannot be opened (as the general index would raise).
    """
    files = [path for given in inputs for path in walk_files(given)]
    try:
        return _Pass(files, max_volume_bytes).run(workers)
    except _ArchiveFound:
        return None


class _Pass:
    """One walk over ``files``: headers for all, pixels for those that fit the prediction."""

    def __init__(self, files: list[Path], max_volume_bytes: int) -> None:
        self.files = files
        self.max_volume_bytes = max_volume_bytes
        self.outcomes: list[Outcome | None] = [None] * len(files)
        self.filled: list[InstanceHeader | None] = [None] * len(files)
        self.notes: list[list[str]] = [[] for _ in files]
        self.prediction: _Prediction | None = None
        self.stop = threading.Event()

    def run(self, workers: int) -> OnePass:
        """Predict from the first two files, then visit every file on ``workers`` threads."""
        for i in range(min(2, len(self.files))):
            with open(self.files[i], "rb", buffering=0) as fh:
                self.outcomes[i] = self._header(i, fh)
        self.prediction = _predict(self.outcomes, self.max_volume_bytes)
        # without pixels to read, the pass is Python under the GIL: a second thread only waits
        runs = contiguous_runs(range(len(self.files)), workers if self.prediction else 1)
        if len(runs) > 1:
            self._visit_in_threads(runs)
        else:
            self._visit_all(range(len(self.files)))
        return OnePass(
            [o for o in self.outcomes if isinstance(o, InstanceHeader)],
            [o for o in self.outcomes if isinstance(o, RejectedFile)],
            PrefilledVolume(self.prediction, self.filled, self.notes) if self.prediction else None,
        )

    def _visit_in_threads(self, runs: Sequence[Sequence[int]]) -> None:
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            futures = [pool.submit(self._visit_all, indices) for indices in runs]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.stop.set()
                raise

    def _visit_all(self, indices: Sequence[int]) -> None:
        scratch = new_scratch()
        for i in indices:
            if self.stop.is_set():
                return
            with open(self.files[i], "rb", buffering=0) as fh:
                outcome = self.outcomes[i]
                if outcome is None:
                    outcome = self.outcomes[i] = self._header(i, fh)
                if isinstance(outcome, InstanceHeader):
                    self._fill(i, outcome, fh, scratch)

    def _header(self, i: int, fh: io.RawIOBase) -> Outcome:
        if is_zip_signature(fh.read(4) or b""):
            raise _ArchiveFound
        return header_or_refusal(self.files[i], str(self.files[i]), fh)

    def _fill(self, i: int, header: InstanceHeader, fh: io.RawIOBase, scratch: np.ndarray) -> None:
        """Write file ``i``'s HU values into its predicted slot, when it fits the prediction."""
        prediction = self.prediction
        if prediction is None or not prediction.fits(header):
            return
        target = prediction.volume[prediction.slot(i)]
        try:
            self.notes[i] = fill_native(fh, header, [target], scratch)
        except (BasiraError, OSError):
            return  # the ordinary read meets the same file again and reports it
        self.filled[i] = header


def _predict(outcomes: Sequence[Outcome | None], max_volume_bytes: int) -> _Prediction | None:
    """A volume for every file, slotted by file order, if the first two files suggest one."""
    if len(outcomes) < 2:
        return None
    first, second = outcomes[0], outcomes[1]
    if not isinstance(first, InstanceHeader) or not isinstance(second, InstanceHeader):
        return None
    shape = (len(outcomes), first.rows, first.columns)
    if shape[0] * shape[1] * shape[2] * 4 > max_volume_bytes:
        return None
    probe = _Prediction(np.empty((0, 0, 0), np.float32), first, ascending=True)
    if not (probe.fits(first) and probe.fits(second)):
        return None
    a, b = first.placements[0], second.placements[0]
    normal = np.cross(a.orientation[:3], a.orientation[3:6])
    along = float(np.dot(np.subtract(b.position_lps_mm, a.position_lps_mm), normal))
    if not np.isfinite(along) or along == 0:
        return None
    return _Prediction(np.empty(shape, np.float32), first, ascending=along > 0)
