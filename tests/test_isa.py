"""Where parity was proven: the CPU's int8 features and the kind of dot product they give."""

import pytest

from dfq_deploy import isa


@pytest.mark.parametrize("features, machine, kind", [
    ({"avx2"}, "x86_64", "int16-pairs"),
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", "int16-pairs"),   # Skylake-SP: AVX-512 without VNNI
    ({"avx2", "avx512_vnni"}, "x86_64", "int32"),
    ({"avx2", "avx_vnni"}, "x86_64", "int32"),
    ({"avx2", "amx_int8"}, "x86_64", "int32"),
    ({"asimd"}, "aarch64", "int32"),
])
def test_int8_dot_kind(features, machine, kind):
    assert isa.int8_dot_kind(features, machine) == kind


def test_an_emulated_cpu_reports_itself_not_its_host(monkeypatch):
    """/proc/cpuinfo describes the host; CPUID (numpy's reading) the CPU this process runs on. Where they disagree,
    the process's CPU wins, and what only /proc/cpuinfo knows of (AVX-VNNI, AMX) is not trusted either."""
    monkeypatch.setattr(isa, "_cpuinfo", lambda: ("Host CPU", {"avx2", "avx512f", "avx512_vnni", "amx_int8"}))
    monkeypatch.setattr(isa, "_process_features", lambda: {"avx2": True, "avx512f": False, "avx512_vnni": False})
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    info = isa.cpu_info()
    assert info["features"] == ["avx2"] and info["int8_dot"] == "int16-pairs" and info["emulated_or_masked"]
    assert "16-bit int8 pair sums" in isa.describe(info) and info["model"] == "Host CPU"


def test_the_host_as_it_is(monkeypatch):
    monkeypatch.setattr(isa, "_cpuinfo", lambda: ("Xeon", {"avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"}))
    monkeypatch.setattr(isa, "_process_features", lambda: {"avx2": True, "avx512f": True, "avx512_vnni": True})
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    info = isa.cpu_info()
    assert info["features"] == ["amx_int8", "avx2", "avx512_vnni", "avx512bw", "avx512f"]
    assert info["int8_dot"] == "int32" and not info["emulated_or_masked"]
    assert isa.describe({**info, "emulated_by": "qemu -cpu Haswell"}).startswith("emulated by qemu -cpu Haswell on Xeon")


def test_numpy_still_reads_cpuid_for_us():
    """Contract test for the one private numpy name used (``__cpu_features__``): on x86 and ARM64 it answers for
    the features the verdict depends on; if a numpy release drops it, this fails rather than the reports going
    quietly by /proc/cpuinfo alone."""
    import platform

    seen = isa._process_features()
    wanted = {"x86_64": {"avx2", "avx512f", "avx512_vnni"}, "aarch64": {"asimd", "asimddp"}}.get(platform.machine())
    if wanted is None:
        pytest.skip(f"no int8 feature list for {platform.machine()}")
    assert wanted <= set(seen) and all(isinstance(v, bool) for v in seen.values())
