"""The host's CPU as it matters for inference speed: its model and the instruction sets that
decide which kernels torch (oneDNN), ONNX Runtime and OpenVINO run.

The same network runs at very different speeds on an AVX2-only CPU and on one with AVX-512, and
which engine is fastest changes with it (``benchmarks/RESULTS.md``), so every figure Basira
reports carries the CPU it was measured on: the benchmark tables, ``/metrics``, the result JSON
and the engine choice cache, which :func:`cpu_info` keys.
"""

from __future__ import annotations

import hashlib
import os
import platform
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ISA_CAPS", "ISA_FLAGS", "CpuInfo", "cpu_info", "parse_cpuinfo"]

#: The instruction sets reported, as Linux's ``/proc/cpuinfo`` names them: AVX2 (and FMA, which
#: comes with it), AVX-512 (foundation), VNNI (the AVX-512 and the AVX form), bfloat16 and AMX.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
#: Environment variables that cap the instruction set kernels use: oneDNN's (torch's
#: convolutions, and OpenVINO's CPU plugin, which is built on oneDNN) and ATen's own vectorised
#: kernels. Set, they make an AVX-512 machine run the code paths of a lesser CPU (ONNX Runtime's
#: own MLAS kernels have no such cap).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


class CpuInfo(BaseModel):
    """The processor a process runs on.

    ``isa`` lists those of :data:`ISA_FLAGS` the processor has, in that order (empty where the
    flags cannot be read, e.g. not on Linux); ``caps`` the instruction-set caps set in this
    process's environment (:data:`ISA_CAPS`, ``NAME=value``), under which it runs as a lesser CPU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    logical_cpus: int = Field(ge=1)
    isa: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.isa

    @property
    def identity(self) -> str:
        """A short stable digest of model, CPU count and instruction sets: two hosts with the same
        identity run the same kernels at the same width (the engine choice cache's key)."""
        text = f"{self.model}|{self.logical_cpus}|{','.join(self.isa)}|{','.join(self.caps)}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def summary(self) -> str:
        """``AMD EPYC 7B13, 2 CPUs, avx2 fma`` (``no AVX2/AVX-512`` when none is present; any
        cap appended as ``; capped: ONEDNN_MAX_CPU_ISA=AVX2``)."""
        flags = " ".join(self.isa) if self.isa else "no AVX2/AVX-512"
        capped = f"; capped: {' '.join(self.caps)}" if self.caps else ""
        return f"{self.model}, {self.logical_cpus} CPUs, {flags}{capped}"


def parse_cpuinfo(text: str, logical_cpus: int, caps: tuple[str, ...] = ()) -> CpuInfo:
    """:class:`CpuInfo` from the text of ``/proc/cpuinfo`` (the first processor's entry; on x86
    every core reports the same model and flags) and the instruction-set ``caps`` in force."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    present = tuple(flag for flag in ISA_FLAGS if flag in flags)
    return CpuInfo(
        model=model or platform.processor() or "unknown CPU",
        logical_cpus=logical_cpus,
        isa=present,
        caps=caps,
    )


@cache
def cpu_info() -> CpuInfo:
    """This host's CPU (read once per process from ``/proc/cpuinfo`` where it exists) and the
    instruction-set caps in this process's environment."""
    # the CPUs this process may run on (a container's share), not the host's count
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    source = Path("/proc/cpuinfo")
    text = source.read_text(encoding="utf-8", errors="replace") if source.is_file() else ""
    caps = tuple(f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name))
    return parse_cpuinfo(text, logical or 1, caps)
