"""Decode the stored pixel values of one instance, fast where the bytes allow it.

Native little-endian 16-bit pixel data is read straight from the file into the caller's array
(no copy through pydicom); every other transfer syntax goes through pydicom's decoders and the
installed plugins (pylibjpeg, pyjpegls, GDCM).
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from pipelines.dicom.header import InstanceHeader
from pipelines.errors import UndecodablePixelDataError, UnsupportedTransferSyntaxError

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
NATIVE_LITTLE_ENDIAN = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})


def decoder_available(transfer_syntax_uid: str) -> bool:
    """True when pixel data in this transfer syntax can be decoded here."""
    if transfer_syntax_uid in NATIVE_LITTLE_ENDIAN:
        return True
    try:
        return bool(get_decoder(UID(transfer_syntax_uid)).is_available)
    except (NotImplementedError, ValueError):
        return False


def read_stored_frames(inst: InstanceHeader) -> np.ndarray:
    """The stored values of every frame, shape ``(frames, rows, columns)``, before rescale.

    Native pixels are read straight from the file (series of native files alone are read in
    chunks by :mod:`pipelines.dicom.native` instead; this serves files mixed with compressed
    ones).

    Raises:
        UnsupportedTransferSyntaxError: no decoder for the file's transfer syntax.
        UndecodablePixelDataError: the decoder rejected the stream.
    """
    if is_fast_native(inst):
        return _read_native(inst)
    if not decoder_available(inst.transfer_syntax_uid):
        raise UnsupportedTransferSyntaxError(
            f"{inst.display_name}: no installed decoder reads transfer syntax "
            f"{inst.transfer_syntax_uid}.",
            transfer_syntax_uid=inst.transfer_syntax_uid,
        )
    try:
        ds = pydicom.dcmread(inst.path)
        frames = ds.pixel_array
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        raise UndecodablePixelDataError(
            f"{inst.display_name}: the pixel data could not be decoded "
            f"({inst.transfer_syntax_uid}): {exc}",
            transfer_syntax_uid=inst.transfer_syntax_uid,
        ) from exc
    return frames.reshape(inst.n_frames, inst.rows, inst.columns)


def is_fast_native(inst: InstanceHeader) -> bool:
    """True when the pixels can be read straight from the file (native little-endian 16-bit)."""
    return (
        inst.transfer_syntax_uid in NATIVE_LITTLE_ENDIAN
        and inst.pixel_data_offset >= 0
        and inst.bits_allocated == 16
        and inst.samples_per_pixel == 1
    )


def _read_native(inst: InstanceHeader) -> np.ndarray:
    dtype = np.dtype("<i2") if inst.pixel_representation else np.dtype("<u2")
    count = inst.n_frames * inst.rows * inst.columns
    raw = np.empty(count, dtype)
    with open(inst.path, "rb") as fh:
        fh.seek(inst.pixel_data_offset)
        got = fh.readinto(raw.data.cast("B"))
    if got != count * 2:
        raise UndecodablePixelDataError(
            f"{inst.display_name}: the file changed while it was read.", path=inst.display_name
        )
    frames = raw.reshape(inst.n_frames, inst.rows, inst.columns)
    mask_unused_bits(frames, inst)
    return frames


def mask_unused_bits(stored: np.ndarray, inst: InstanceHeader) -> None:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored of native values.

    Those bits may hold overlays or garbage; pydicom's decoding drops them the same way.
    """
    unused_bits = 16 - inst.bits_stored
    if not 0 < unused_bits < 16:
        return
    if inst.pixel_representation:
        np.left_shift(stored, unused_bits, out=stored)
        np.right_shift(stored, unused_bits, out=stored)
    else:
        np.bitwise_and(stored, np.uint16((1 << inst.bits_stored) - 1), out=stored)
