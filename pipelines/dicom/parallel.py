"""Decode compressed series on every core: worker processes writing into one shared volume.

The JPEG 2000, JPEG-LS and RLE decoders hold the GIL, so threads were measured slower than one
(benchmarks/RESULTS.md). Worker processes each decode a contiguous run of slices and write HU
values straight into a memory-mapped file (in ``/dev/shm`` where it exists), so no pixel is
pickled. Workers are started with ``spawn``: safe beside threads and torch, and the same on every
platform. As with any ``multiprocessing`` user, a script calling this must guard its entry point
with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipelines.dicom.header import InstanceHeader

T = TypeVar("T")
#: (instance, the volume slice of each of its frames)
Placed = tuple[InstanceHeader, tuple[int, ...]]
#: Writes one instance's HU values into the given slices and returns the defaults it applied.
FillOne = Callable[[InstanceHeader, list[np.ndarray]], list[str]]
#: Below this many frames, starting processes (about half a second) costs more than it saves.
MIN_FRAMES_FOR_PROCESSES = 24


def fill_with_processes(
    placed: Sequence[Placed], shape: tuple[int, int, int], fill_one: FillOne, workers: int
) -> tuple[np.ndarray, list[str]]:
    """Run ``fill_one`` over ``placed`` in ``workers`` processes; return the volume and notes.

    ``placed`` must be in slice order so that each process writes one contiguous block.
    ``fill_one`` must be a module-level function (it is pickled by reference). Errors raised in
    a worker (a :class:`~pipelines.errors.BasiraError` for an undecodable file) are re-raised.
    """
    chunks = contiguous_runs(placed, workers * 4)
    needed = 4 * shape[0] * shape[1] * shape[2] + 1024**2
    ram = _ram_dir(needed)
    with tempfile.TemporaryDirectory(prefix="basira-decode-", dir=ram) as tmp:
        target = Path(tmp) / "volume.npy"
        np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=shape).flush()
        pool = _pool(workers)
        futures = [pool.submit(_fill_chunk, str(target), chunk, fill_one) for chunk in chunks]
        notes = [note for future in futures for note in future.result()]
        mapped = np.load(target, mmap_mode="r+")
        # in RAM, the mapping outlives the file's name (POSIX) and no copy is made; on disk the
        # volume is copied into memory so that it never depends on a deleted file's pages
        volume = np.asarray(mapped) if ram else np.array(mapped)
    return volume, notes


def shutdown_pool() -> None:
    """Stop the decoding processes (they are otherwise kept for the next series)."""
    global _POOL
    if _POOL is not None:
        _POOL[1].shutdown(cancel_futures=True)
        _POOL = None


#: (workers, pool): started on first use and kept, because starting a worker (importing numpy,
#: pydicom and the decoders) costs about as much as decoding 100 RLE slices.
_POOL: tuple[int, ProcessPoolExecutor] | None = None


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None or _POOL[0] != workers:
        shutdown_pool()
        context = multiprocessing.get_context("spawn")
        _POOL = (workers, ProcessPoolExecutor(max_workers=workers, mp_context=context))
    return _POOL[1]


def _fill_chunk(target: str, chunk: Sequence[Placed], fill_one: FillOne) -> list[str]:
    volume = np.load(target, mmap_mode="r+")
    notes: list[str] = []
    for inst, slices in chunk:
        notes += fill_one(inst, [volume[k] for k in slices])
    volume.flush()
    return notes


def contiguous_runs(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """``items`` cut into at most ``n`` contiguous runs of near-equal length."""
    n = max(1, min(n, len(items)))
    bounds = [round(len(items) * c / n) for c in range(n + 1)]
    return [items[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _ram_dir(needed_bytes: int) -> str | None:
    """``/dev/shm`` when it has room (the volume never touches a disk), else the temp folder.

    Containers often mount a small ``/dev/shm`` (64 MB by default in Docker), where writing past
    its size would kill the worker, so the free space is checked first.
    """
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        return None
    return shm if shutil.disk_usage(shm).free > 2 * needed_bytes else None
