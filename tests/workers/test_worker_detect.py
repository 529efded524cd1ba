"""Hardware detection: targets TVM accepts that name the real hardware, from real text."""

from __future__ import annotations

import platform

import pytest

from common.errors import BadInput
from common.targets import canonical_target
from workers.detect import (
    Device,
    GpuInfo,
    arm_mattr,
    available_cores,
    cpu_target_from,
    cuda_target,
    detect_cpu_target,
    detect_hardware,
    find_cuda_compiler,
    parse_cpu_list,
    parse_device,
    parse_nvidia_smi,
    runs_here,
    x86_mattr,
)
from workers.fleet import plan_devices

# `nvidia-smi --query-gpu=index,uuid,name,compute_cap,memory.total --format=csv,noheader,nounits`
NVIDIA_SMI = """\
0, GPU-5e2c0f1a-aaaa-bbbb-cccc-000000000001, NVIDIA H100 80GB HBM3, 9.0, 81559
1, GPU-5e2c0f1a-aaaa-bbbb-cccc-000000000002, NVIDIA A100-SXM4-40GB, 8.0, 40960
2, GPU-5e2c0f1a-aaaa-bbbb-cccc-000000000003, Tesla K80, [N/A], 11441
"""
RPI4_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 1
Features\t: fp asimd evtstrm crc32 cpuid
"""
GRAVITON3_CPUINFO = """\
processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
"""
X86_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx f16c fma avx2 bmi2\n"


def test_cpu_target_is_valid_and_specific() -> None:
    target = detect_cpu_target()
    canonical, key = canonical_target(target)
    assert target["kind"] == "llvm" and canonical["kind"] == "llvm"
    assert target["num-cores"] == len(available_cores()) >= 1
    assert target.get("mcpu") != "native"  # TVM_NOTES §0: falls back to generic
    if platform.machine() == "x86_64":
        assert target["mcpu"] and target["mcpu"] != "generic"
        assert all(f[0] in "+-" for f in target.get("mattr", []))
    if platform.machine() in ("aarch64", "arm64"):
        assert target["mtriple"] == "aarch64-linux-gnu" and "+neon" in target["mattr"]
    assert f'"num-cores":{target["num-cores"]}' in key
    assert detect_cpu_target() == target  # stable: a restarted worker registers the same key


def test_num_cores_override() -> None:
    assert detect_cpu_target(num_cores=1)["num-cores"] == 1


def test_x86_mattr_from_flags_and_what_mcpu_implies() -> None:
    flags = set(X86_CPUINFO.split("flags\t\t: ")[1].split())
    assert x86_mattr(flags) == ["+avx", "+avx2", "+f16c", "+fma"]
    # A VM that hides AVX-512 of an AVX-512 CPU: switch off what mcpu implies.
    assert x86_mattr(flags, implied={"avx2", "avx512f", "avx512bw", "sse4.2"}) == [
        "+avx", "+avx2", "+f16c", "+fma", "-avx512bw", "-avx512f"
    ]
    target = cpu_target_from(machine="x86_64", cpuinfo=X86_CPUINFO, num_cores=8, mcpu="znver3")
    assert target == {"kind": "llvm", "mcpu": "znver3", "mattr": ["+avx", "+avx2", "+f16c", "+fma"], "num-cores": 8}
    canonical_target(target)


def test_arm_targets_from_cpuinfo() -> None:
    rpi = cpu_target_from(machine="aarch64", cpuinfo=RPI4_CPUINFO, num_cores=4, mcpu="cortex-a72")
    assert rpi == {"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
    graviton = cpu_target_from(machine="aarch64", cpuinfo=GRAVITON3_CPUINFO, num_cores=64, mcpu="generic")
    assert "mcpu" not in graviton
    assert graviton["mattr"] == ["+bf16", "+dotprod", "+fullfp16", "+i8mm", "+neon", "+sve"]
    assert arm_mattr(set()) == ["+neon"]  # every AArch64 core has Advanced SIMD
    for target in (rpi, graviton):
        canonical, _ = canonical_target(target)  # TVM (built for x86) accepts the cross target
        assert canonical["mtriple"] == "aarch64-linux-gnu"
        assert not runs_here(target) if platform.machine() == "x86_64" else True


def test_nvidia_smi_parsing_and_cuda_targets() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI + "garbage line\n\n")
    assert [(g.index, g.arch, g.memory_mib) for g in gpus] == [(0, "sm_90", 81559), (1, "sm_80", 40960)]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].uuid.startswith("GPU-")
    assert parse_nvidia_smi("") == []
    for cap, arch in (("9.0", "sm_90"), ("8.6", "sm_86"), ("12.0", "sm_120")):
        target = cuda_target(cap)
        assert target["arch"] == arch and target["max_threads_per_block"] == 1024
        canonical, key = canonical_target(target)
        assert canonical["kind"] == "cuda" and f'"arch":"{arch}"' in key


def test_devices_and_cpu_lists() -> None:
    assert parse_device("cpu") == Device("cpu")
    assert parse_device("cuda") == Device("cuda", 0) and parse_device("CUDA:3") == Device("cuda", 3)
    assert str(parse_device("gpu:1")) == "cuda:1"
    with pytest.raises(ValueError, match="Unknown device"):
        parse_device("tpu:0")
    assert parse_cpu_list("0-3,8") == [0, 1, 2, 3, 8]
    with pytest.raises(ValueError):
        parse_cpu_list("a-b")


@pytest.mark.skipif(find_cuda_compiler() is None, reason="no nvcc or NVRTC here: GPU plans refuse to start without one")
def test_plan_for_several_gpus() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI)
    plans = plan_devices(["cuda:1", "cpu", "cuda:1"], all_gpus=True, name="lab7", gpus=gpus)
    assert [str(p.device) for p in plans] == ["cuda:1", "cpu", "cuda:0"]  # each device once
    by = {str(p.device): p for p in plans}
    assert by["cpu"].name == "lab7" and by["cpu"].target["kind"] == "llvm"
    assert by["cuda:0"].name == "lab7-cuda0" and by["cuda:0"].target["arch"] == "sm_90"
    assert by["cuda:1"].target["arch"] == "sm_80" and by["cuda:1"].hardware["gpu"]["name"].startswith("NVIDIA A100")
    assert by["cuda:0"].sandbox_env == {"CUDA_VISIBLE_DEVICES": gpus[0].uuid}
    assert by["cuda:0"].cuda_compiler in ("nvcc", "nvrtc") and len(by["cuda:0"].cpus or []) == 1
    with pytest.raises(BadInput, match="no such NVIDIA GPU"):
        plan_devices(["cuda:5"], gpus=gpus)
    with pytest.raises(BadInput, match="no NVIDIA GPU"):
        plan_devices([], all_gpus=True, gpus=[])
    with pytest.raises(BadInput, match="does not fit"):
        plan_devices(["cuda:0"], target={"kind": "llvm"}, gpus=gpus)


def test_hardware_description() -> None:
    hw = detect_hardware(GpuInfo(index=0, name="NVIDIA H100", compute_cap="9.0"))
    assert hw["cpu"] and hw["cores"] == len(available_cores())
    assert hw["machine"] == platform.machine()
    assert hw["tvm"].startswith("0.")
    assert hw["gpu"]["compute_cap"] == "9.0"
