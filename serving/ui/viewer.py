"""What the browser viewer reads: a job's series laid out from its headers (bounded LRU cache),
its geometry and findings as metadata, and single slices as raw little-endian int16 HU, each
decoded from its own file when asked for.

Why per slice and not the whole volume: a whole-volume decode delays the first image and keeps
the series in memory, while its headers and one slice are read in a small fraction of that time
(``benchmarks/RESULTS.md``), and the browser keeps what it has fetched.

Why raw HU and not rendered PNGs: window/level then happens in the browser on every mouse move
without a round trip, and a 512x512 slice is 512 KiB before gzip (CT air and soft tissue
compress well), small enough on a hospital LAN.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines.dicom.slices import SeriesLayout, read_series_layout, read_slice_hu
from serving.models import Instance, Job
from serving.storage import InstanceStore

__all__ = [
    "SeriesCache",
    "SeriesView",
    "encode_slice",
    "gzip_bytes",
    "hu_int16",
    "series_metadata",
]

#: HU are sent as int16: half the bytes of float32, and what CT stores anyway.
_HU_MIN, _HU_MAX = -32768, 32767
#: zlib's window bits for a gzip container (header and CRC) around the deflate stream.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True)
class SeriesView:
    """A job's series as the viewer needs it: its layout (slice order, geometry) and the file
    whose header is shown on screen."""

    layout: SeriesLayout
    first_file: str

    @property
    def shape_kji(self) -> tuple[int, int, int]:
        return self.layout.shape

    @property
    def affine_lps(self) -> np.ndarray:
        return self.layout.affine_lps


class SeriesCache:
    """Series layouts by job id, the ``capacity`` most recently used kept; a series being laid
    out is read once even when several requests ask for it together."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._views: OrderedDict[str, SeriesView] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, session: Session, store: InstanceStore, job: Job) -> SeriesView:
        with self._lock:
            if job.id in self._views:
                self._views.move_to_end(job.id)
                return self._views[job.id]
            loading = self._loading.setdefault(job.id, threading.Lock())
        with loading:
            with self._lock:
                if job.id in self._views:
                    return self._views[job.id]
            view = _lay_out(session, store, job)
            with self._lock:
                self._views[job.id] = view
                self._loading.pop(job.id, None)
                while len(self._views) > self.capacity:
                    self._views.popitem(last=False)
            return view


def _lay_out(session: Session, store: InstanceStore, job: Job) -> SeriesView:
    """Lay out the job's analysed series (the one its result names, else its largest)."""
    rows = session.execute(
        select(Instance.series_instance_uid, Instance.sha256).where(
            Instance.tenant_id == job.tenant_id, Instance.id.in_(job.instance_ids)
        )
    ).all()
    series_uid = _result(job).get("series_instance_uid")
    by_series: dict[str, list[str]] = {}
    for uid, sha in rows:
        by_series.setdefault(uid, []).append(sha)
    chosen = by_series.get(series_uid) if series_uid else None
    shas = chosen or max(by_series.values(), key=len)
    paths = [store.instance_path(job.tenant_id, sha) for sha in shas]
    return SeriesView(read_series_layout(paths), str(paths[0]))


def _result(job: Job) -> dict[str, Any]:
    return dict(json.loads(job.result_json)) if job.result_json else {}


def hu_int16(hu: np.ndarray) -> np.ndarray:
    """Float HU rounded and clipped to little-endian int16, the viewer's wire format."""
    return np.clip(np.rint(hu), _HU_MIN, _HU_MAX).astype("<i2")


def encode_slice(view: SeriesView, k: int, *, gzipped: bool = True) -> bytes:
    """Slice ``k`` as little-endian int16 HU, row-major ``[j, i]``, gzipped unless told not;
    ``SliceOutOfRangeError`` past the series.

    The gzip stream is Huffman-only: CT noise leaves deflate's string matching little to find,
    so full deflate compresses a slice hardly better for markedly more time.
    """
    raw = hu_int16(read_slice_hu(view.layout, k)).tobytes()
    return gzip_bytes(raw) if gzipped else raw


def gzip_bytes(raw: bytes) -> bytes:
    """``raw`` in a gzip container, Huffman-only (see :func:`encode_slice`)."""
    gzip_stream = zlib.compressobj(1, zlib.DEFLATED, _GZIP_WBITS, 8, zlib.Z_HUFFMAN_ONLY)
    return gzip_stream.compress(raw) + gzip_stream.flush()


def series_metadata(view: SeriesView, job: Job) -> dict[str, Any]:
    """Geometry, per-slice SOP Instance UIDs, the AI result and the findings mapped to slices."""
    result = _result(job)
    return {
        "shape_kji": list(view.shape_kji),
        "spacing_mm": list(view.layout.spacing_mm),
        "affine_lps": view.affine_lps.tolist(),
        "sop_instance_uids": list(view.layout.sop_instance_uids),
        "findings": [_finding_on_slices(f, view) for f in result.get("findings", [])],
        "diagnosis": result.get("diagnosis"),
        "model": result.get("model"),
        "status": job.status,
        "probability_map": False,
        "header": _display_header(view.first_file),
    }


def _finding_on_slices(finding: dict[str, Any], view: SeriesView) -> dict[str, Any]:
    """A finding with its in-plane radius in pixels and the slices its sphere crosses."""
    k = finding["center_ijk"][2]
    radius_mm = float(finding["diameter_mm"]) / 2
    sx, sy, sz = view.layout.spacing_mm
    reach = int(np.floor(radius_mm / sz)) if sz > 0 else 0
    last = view.shape_kji[0] - 1
    return {
        **finding,
        "k": round(k),
        "radius_mm": radius_mm,
        "radius_px": [radius_mm / sx, radius_mm / sy],
        "k_range": [max(0, round(k) - reach), min(last, round(k) + reach)],
    }


def _display_header(path: str) -> dict[str, str]:
    """What identifies the patient on screen, read from the stored DICOM at view time only
    (the database keeps no names; nothing here is logged)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_SHOWN)
    return {kw: str(ds.get(kw, "") or "") for kw in _SHOWN}


_SHOWN = ["PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription"]
