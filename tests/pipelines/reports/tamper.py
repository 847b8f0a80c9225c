"""Broken writers for tests: an SR whose points no longer sit on their findings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines.reports import writer as writer_module


def move_sr_points(monkeypatch: pytest.MonkeyPatch, shift_mm: float) -> None:
    """Make the writers build SRs whose SCOORD3D points are moved by ``shift_mm`` on every axis,
    so the SR's geometry self-check fails."""
    build_sr: Callable[..., Any] = writer_module.build_sr

    def moved_point(study: Any, seg: Any) -> Any:
        sr = build_sr(study, seg)
        for item in sr.ContentSequence:
            for entry in getattr(item, "ContentSequence", []):
                for row in getattr(entry, "ContentSequence", []):
                    if row.ValueType == "SCOORD3D":
                        row.GraphicData = [float(v) + shift_mm for v in row.GraphicData]
        return sr

    monkeypatch.setattr(writer_module, "build_sr", moved_point)
