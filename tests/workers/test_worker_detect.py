"""Hardware detection gives a target TVM accepts and that names the real CPU."""

from __future__ import annotations

import platform

from tunehub.targets import canonical_target
from workers.detect import available_cores, detect_cpu_target, detect_hardware


def test_cpu_target_is_valid_and_specific() -> None:
    target = detect_cpu_target()
    canonical, key = canonical_target(target)
    assert target["kind"] == "llvm" and canonical["kind"] == "llvm"
    assert target["num-cores"] == available_cores() >= 1
    assert target.get("mcpu") != "native"  # TVM_NOTES §0: falls back to generic
    if platform.machine() == "x86_64":
        assert target["mcpu"] and target["mcpu"] != "generic"
    if platform.machine() in ("aarch64", "arm64"):
        assert target["mtriple"] == "aarch64-linux-gnu"
    assert f'"num-cores":{target["num-cores"]}' in key


def test_num_cores_override() -> None:
    assert detect_cpu_target(num_cores=1)["num-cores"] == 1


def test_hardware_description() -> None:
    hw = detect_hardware()
    assert hw["cpu"] and hw["cores"] == available_cores()
    assert hw["machine"] == platform.machine()
    assert hw["tvm"].startswith("0.")
