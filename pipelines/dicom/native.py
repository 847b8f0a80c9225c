"""Native pixels from the file straight into the HU volume.

Little-endian 16-bit monochrome pixel data (what CT scanners write uncompressed) needs no
decoder: its bytes are the stored values. Each frame is read into a small scratch buffer that is
reused for every file, masked to BitsStored, and rescaled into the float32 volume, so the
volume's memory is written once and no full-size intermediate array exists. Frames larger than
:data:`CHUNK_BYTES` are read a band of rows at a time.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from pipelines.dicom.header import InstanceHeader
from pipelines.dicom.hu import frame_rescale, rescale_into
from pipelines.dicom.pixels import is_fast_native, mask_unused_bits
from pipelines.errors import UndecodablePixelDataError

#: Stored bytes read at once. A 512 x 512 frame (512 KiB) is one read: one read per frame
#: measured cheaper than bands sized for the L2 cache (fewer system calls and numpy calls; the
#: copy streams either way).
CHUNK_BYTES = 1024 * 1024


def new_scratch() -> np.ndarray:
    """A scratch buffer for :func:`fill_native` (one per thread; reused for every file)."""
    return np.empty(CHUNK_BYTES, np.uint8)


def fill_native(
    fh: io.RawIOBase, inst: InstanceHeader, targets: Sequence[np.ndarray], scratch: np.ndarray
) -> list[str]:
    """Read every frame of ``inst`` from ``fh`` as HU into ``targets``; return defaults applied.

    ``fh`` is ``inst``'s file opened unbuffered (``open(path, "rb", buffering=0)``: the chunks
    go straight into ``scratch``); ``targets[f]`` is frame ``f``'s ``(rows, columns)`` float32
    slice of the volume; ``scratch`` comes from :func:`new_scratch`.

    Raises:
        UndecodablePixelDataError: the file is no longer as long as its header said (it
            changed after it was indexed).
    """
    if not is_fast_native(inst):
        raise ValueError(f"{inst.display_name} is not native 16-bit pixel data")
    dtype = np.dtype("<i2") if inst.pixel_representation else np.dtype("<u2")
    row_bytes = inst.columns * 2
    rows_per_chunk = max(1, min(inst.rows, CHUNK_BYTES // row_bytes))
    if rows_per_chunk * row_bytes > scratch.nbytes:
        scratch = np.empty(rows_per_chunk * row_bytes, np.uint8)
    chunk = scratch[: rows_per_chunk * row_bytes].view(dtype).reshape(rows_per_chunk, -1)
    notes = []
    for f, target in enumerate(targets):
        slope, intercept, note = frame_rescale(inst, f)
        if note is not None:
            notes.append(note)
        frame_start = inst.pixel_data_offset + f * inst.rows * row_bytes
        for row in range(0, inst.rows, rows_per_chunk):
            stored = chunk[: min(rows_per_chunk, inst.rows - row)]
            _read_exactly(fh, frame_start + row * row_bytes, stored, inst)
            mask_unused_bits(stored, inst)
            rescale_into(stored, slope, intercept, target[row : row + len(stored)])
    return notes


def _read_exactly(fh: io.RawIOBase, offset: int, out: np.ndarray, inst: InstanceHeader) -> None:
    fh.seek(offset)
    if fh.readinto(out.data.cast("B")) != out.nbytes:
        raise UndecodablePixelDataError(
            f"{inst.display_name}: the file changed while it was read.", path=inst.display_name
        )
