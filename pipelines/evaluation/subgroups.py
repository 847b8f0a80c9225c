"""Subgroup labels: which size bin, lesion type or slice-thickness bin a lesion or case is in.

Bins are half-open ``[low, high)`` between the given edges: edges ``(6, 10, 20)`` make
``<6 mm``, ``6-10 mm``, ``10-20 mm`` and ``>=20 mm``. A missing value is ``unknown``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

#: the lesion size bins every report gives: <6, 6-10, 10-20 and >=20 mm
SIZE_EDGES_MM = (6.0, 10.0, 20.0)


def bin_labels(edges: Sequence[float], unit: str = "mm") -> list[str]:
    """All bin labels for sorted ``edges``, smallest first."""
    if not edges:
        return [f"all {unit}".strip()]
    inner = [f"{low:g}-{high:g} {unit}" for low, high in itertools.pairwise(edges)]
    return [f"<{edges[0]:g} {unit}", *inner, f">={edges[-1]:g} {unit}"]


def bin_label(value: float | None, edges: Sequence[float], unit: str = "mm") -> str:
    """The label of the bin holding ``value`` (``unknown`` for None)."""
    if value is None:
        return "unknown"
    return bin_labels(edges, unit)[bisect.bisect_right(list(edges), value)]
