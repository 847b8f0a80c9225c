"""The host's CPU facts: model and instruction sets parsed from ``/proc/cpuinfo``."""

from __future__ import annotations

from pipelines.cpu import ISA_FLAGS, CpuInfo, cpu_info, parse_cpuinfo

EPYC = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 avx fma avx2 bmi2 sha_ni
processor	: 1
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 avx fma avx2 bmi2 sha_ni
"""
SAPPHIRE = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8481C
flags		: fma avx2 avx512f avx512bw avx_vnni avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""


def test_an_avx2_only_cpu_is_told_from_an_avx512_one() -> None:
    epyc = parse_cpuinfo(EPYC, 2)
    xeon = parse_cpuinfo(SAPPHIRE, 2)

    assert epyc == CpuInfo(model="AMD EPYC 7B13", logical_cpus=2, isa=("avx2", "fma"))
    assert not epyc.has_avx512
    assert xeon.isa == (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_tile",
    )
    assert xeon.has_avx512
    assert epyc.identity != xeon.identity
    assert epyc.summary() == "AMD EPYC 7B13, 2 CPUs, avx2 fma"


def test_the_cpu_count_is_part_of_the_identity() -> None:
    assert parse_cpuinfo(EPYC, 2).identity != parse_cpuinfo(EPYC, 4).identity
    assert parse_cpuinfo(EPYC, 2).identity == parse_cpuinfo(EPYC, 2).identity


def test_text_without_flags_still_names_a_cpu() -> None:
    info = parse_cpuinfo("", 1)
    assert info.model and info.isa == ()
    assert "no AVX2/AVX-512" in info.summary()


def test_this_host_is_read_once() -> None:
    info = cpu_info()
    assert info is cpu_info()
    assert info.logical_cpus >= 1
    assert set(info.isa) <= set(ISA_FLAGS)


def test_an_instruction_set_cap_is_named_and_changes_the_identity() -> None:
    """A process run with ``ONEDNN_MAX_CPU_ISA=AVX2`` runs the kernels of a lesser CPU: its
    figures and its engine choice must not pass for the uncapped machine's."""
    capped = parse_cpuinfo(SAPPHIRE, 2, ("ONEDNN_MAX_CPU_ISA=AVX2",))
    assert capped.identity != parse_cpuinfo(SAPPHIRE, 2).identity
    assert capped.summary().endswith("; capped: ONEDNN_MAX_CPU_ISA=AVX2")


def test_the_caps_in_the_environment_are_read(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpu_info.cache_clear()
    try:
        assert cpu_info().caps == ("ONEDNN_MAX_CPU_ISA=AVX2",)
    finally:
        cpu_info.cache_clear()
