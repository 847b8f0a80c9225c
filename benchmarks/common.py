"""Shared benchmark helpers: timing by median of repeats, and the printed table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs (after one untimed warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


#: the instruction sets that decide which kernels the engines run, as /proc/cpuinfo names them
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_summary() -> str:
    """The CPU model, logical CPUs, the instruction sets that matter and the load average: what
    a figure depends on, printed with every table (machines differ from one run to the next)."""
    import os
    from pathlib import Path

    model, flags = "unknown CPU", set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    present = [flag for flag in _ISA_FLAGS if flag in flags] or ["none of " + "/".join(_ISA_FLAGS)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(present)}; load {load:.2f}"


def print_table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    """Print rows as a Markdown table (pasted as is into RESULTS.md), after the CPU it ran on."""
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(f"\n### {title}\n")
    print(f"CPU: {cpu_summary()}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
