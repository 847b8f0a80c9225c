"""Coronal and sagittal planes and maximum-intensity slabs in any plane, reformatted by the
server from the job's series.

Why on the server: a coronal or sagittal image needs one row or column of every slice, so the
browser would have to fetch the whole series (150 MiB for 512x512x300) before its first image.
The server decodes the series once into an int16 HU volume (``[k, j, i]``, 150 MiB for
512x512x300; the ``VOLUMES_KEPT`` most recently used are kept), started in the background when
the study is opened, and cuts each requested plane from it in a few milliseconds. Axial slices
without a slab still come one file at a time (:mod:`serving.ui.viewer`), so the first image
never waits for the volume.

Every image goes out as the viewer's wire format: little-endian int16 HU, row-major, gzipped.
Rows and columns of each plane, in voxel indices: axial ``[j, i]`` at ``k``, coronal ``[k, i]``
at ``j``, sagittal ``[k, j]`` at ``i`` (rows in slice order: the browser turns them so the
head is up, from the affine).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

import numpy as np

from pipelines.dicom.hu import frame_rescale
from pipelines.dicom.pixels import read_stored_frames
from pipelines.dicom.slices import read_slice_hu
from pipelines.errors import BasiraError, SliceOutOfRangeError
from serving.ui.viewer import SeriesView, gzip_bytes, hu_int16

__all__ = ["VOLUMES_KEPT", "Plane", "VolumeCache", "encode_plane", "plane_image", "slab_range"]

log = logging.getLogger(__name__)

#: Series volumes kept decoded (150 MiB each for 512x512x300).
VOLUMES_KEPT = 2
#: Threads decoding one series' slices (file reads and decoding release the GIL).
_DECODE_THREADS = 4
_INT16 = np.iinfo(np.int16)


class Plane(StrEnum):
    """A viewing plane, named for the patient axis it is perpendicular to."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


#: The volume axis ``[k, j, i]`` each plane is perpendicular to.
_NORMAL_AXIS = {Plane.AXIAL: 0, Plane.CORONAL: 1, Plane.SAGITTAL: 2}
#: The spacing (``SeriesLayout.spacing_mm`` order: i, j, k) along each plane's normal.
_NORMAL_SPACING = {Plane.AXIAL: 2, Plane.CORONAL: 1, Plane.SAGITTAL: 0}


class VolumeCache:
    """Decoded int16 HU volumes by job id, the ``capacity`` most recently used kept; a volume
    being decoded is decoded once even when several requests (or the background start) ask."""

    def __init__(self, capacity: int = VOLUMES_KEPT) -> None:
        self.capacity = capacity
        self._volumes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, job_id: str, view: SeriesView) -> np.ndarray:
        """The job's volume ``[k, j, i]`` as int16 HU, decoded now if not kept."""
        with self._lock:
            if job_id in self._volumes:
                self._volumes.move_to_end(job_id)
                return self._volumes[job_id]
            loading = self._loading.setdefault(job_id, threading.Lock())
        with loading:
            with self._lock:
                if job_id in self._volumes:
                    return self._volumes[job_id]
            try:
                volume = _decode(view)
            finally:
                with self._lock:
                    self._loading.pop(job_id, None)
            with self._lock:
                self._volumes[job_id] = volume
                while len(self._volumes) > self.capacity:
                    self._volumes.popitem(last=False)
            return volume

    def warm(self, job_id: str, view: SeriesView) -> None:
        """Start decoding the job's volume in a background thread (the study was opened: a
        coronal or sagittal request will likely follow)."""
        with self._lock:
            if job_id in self._volumes or job_id in self._loading:
                return
        threading.Thread(
            target=self._warm, args=(job_id, view), name=f"basira-volume-{job_id[:8]}", daemon=True
        ).start()

    def _warm(self, job_id: str, view: SeriesView) -> None:
        """Decode in the background; a series that cannot be decoded is left for the plane
        request, which answers with the error's code."""
        try:
            self.get(job_id, view)
        except BasiraError as exc:
            log.warning("series volume not decoded for job %s: %s", job_id, exc.code)
        except Exception as exc:  # a thread's uncaught error would print an unredacted traceback
            log.warning("series volume not decoded for job %s: %s", job_id, type(exc).__name__)


def _decode(view: SeriesView) -> np.ndarray:
    """Every slice of the series as int16 HU ``[k, j, i]``, equal to :func:`hu_int16` of
    :func:`read_slice_hu` of each slice.

    CT stores integers with slope 1 and an integral intercept: then the HU are computed in
    integers (exact, and about twice as fast as through float32); any other rescale goes
    through the float path.
    """
    volume = np.empty(view.shape_kji, dtype="<i2")

    def fill(k: int) -> None:
        inst, frame = view.layout.frames[k]
        slope, intercept, _ = frame_rescale(inst, frame)
        if slope != 1.0 or intercept != int(intercept):
            volume[k] = hu_int16(read_slice_hu(view.layout, k))
            return
        hu = read_stored_frames(inst)[frame].astype(np.int32)
        hu += int(intercept)
        np.clip(hu, _INT16.min, _INT16.max, out=hu)
        volume[k] = hu

    with ThreadPoolExecutor(_DECODE_THREADS, thread_name_prefix="basira-decode") as pool:
        list(pool.map(fill, range(view.shape_kji[0])))
    return volume


def slab_range(view: SeriesView, plane: Plane, index: int, slab_mm: float) -> tuple[int, int]:
    """The indices ``[first, last)`` along ``plane``'s normal of a slab ``slab_mm`` thick
    centred on ``index``: ``slab_mm`` over the spacing images, rounded, at least one; clipped
    to the series.

    Raises:
        SliceOutOfRangeError: ``index`` is outside the series along the plane's normal.
    """
    n = view.shape_kji[_NORMAL_AXIS[plane]]
    if not 0 <= index < n:
        raise SliceOutOfRangeError(
            "No such image in this plane of the series.", index=index, n_images=n, plane=plane
        )
    spacing = view.layout.spacing_mm[_NORMAL_SPACING[plane]]
    n_images = max(1, round(slab_mm / spacing)) if spacing > 0 else 1
    first = index - (n_images - 1) // 2
    return max(0, first), min(n, first + n_images)


def plane_image(
    volume: np.ndarray, view: SeriesView, plane: Plane, index: int, slab_mm: float
) -> np.ndarray:
    """The image of ``plane`` at ``index``: the maximum over the slab ``slab_mm`` thick
    centred there (0: the single plane), int16 HU, rows and columns as the module says."""
    first, last = slab_range(view, plane, index, slab_mm)
    axis = _NORMAL_AXIS[plane]
    slab = volume[(slice(None),) * axis + (slice(first, last),)]
    return np.ascontiguousarray(slab.max(axis=axis))


def encode_plane(
    volume: np.ndarray, view: SeriesView, plane: Plane, index: int, slab_mm: float
) -> bytes:
    """:func:`plane_image` in the viewer's wire format (little-endian int16, gzipped)."""
    return gzip_bytes(plane_image(volume, view, plane, index, slab_mm).astype("<i2").tobytes())
