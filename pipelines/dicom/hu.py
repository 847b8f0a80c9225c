"""Stored pixel values to Hounsfield units: one slope and intercept per frame, defaults recorded.

Every reading path (native frames, decoded frames, worker processes) converts through
:func:`rescale_into`, so a slice has the same float32 HU values, bit for bit, whichever path
read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipelines.dicom.header import InstanceHeader


def frame_rescale(inst: InstanceHeader, frame: int) -> tuple[float, float, str | None]:
    """``(slope, intercept, default_note)`` of one frame; the note says what was assumed, if any.

    An absent RescaleSlope or RescaleIntercept (recorded as NaN by the header reader) becomes
    1 or 0, and the note records it for the volume's provenance.
    """
    slope, intercept = inst.rescale[min(frame, len(inst.rescale) - 1)]
    if not (math.isnan(slope) or math.isnan(intercept)):
        return slope, intercept, None
    note = f"{inst.sop_instance_uid}: RescaleSlope/Intercept absent, 1/0 used"
    return (
        1.0 if math.isnan(slope) else slope,
        0.0 if math.isnan(intercept) else intercept,
        note,
    )


def rescale_into(stored: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> None:
    """Write ``stored * slope + intercept`` into ``out`` (float32, the same shape), in place.

    The stored values are first cast into ``out`` (exact for 16-bit integers) and then scaled
    and shifted there in float32: numpy's plain cast and in-place arithmetic measured faster
    than one ufunc casting on the fly, with the same float32 results.
    """
    np.copyto(out, stored, casting="same_kind")
    if slope != 1.0:
        np.multiply(out, np.float32(slope), out=out)
    np.add(out, np.float32(intercept), out=out)


def to_hu(stored: np.ndarray, inst: InstanceHeader, out: Sequence[np.ndarray]) -> list[str]:
    """Write each stored frame ``stored[f]`` as HU into ``out[f]``; return the defaults used."""
    defaults = []
    for f, target in enumerate(out):
        slope, intercept, note = frame_rescale(inst, f)
        if note is not None:
            defaults.append(note)
        rescale_into(stored[f], slope, intercept, target)
    return defaults
