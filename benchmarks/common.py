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


def cpu_summary() -> str:
    """The CPU model, logical CPUs, the instruction sets that matter and any cap on them
    (:func:`pipelines.cpu.cpu_info`), and the load average: what a figure depends on, printed
    with every table (machines differ from one run to the next; capped, the figures stand for a
    lesser CPU)."""
    import os

    from pipelines.cpu import cpu_info

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_info().summary()}; load {load:.2f}"


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
