"""Fixtures for the worker tests: real workloads, real MetaSchedule candidates."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from tvm_helpers import CPU_TARGET, matmul_workload, real_candidates  # noqa: E402

N = 64  # small enough that a build and a check take well under a second


@pytest.fixture(scope="session")
def workload() -> dict[str, Any]:
    """The 64³ matmul: its hash, save_json text and three real candidate traces."""
    from common.tvm_json import workload_hash, workload_to_json

    mod = matmul_workload(N)
    return {
        "mod": mod,
        "hash": workload_hash(mod),
        "mod_json": workload_to_json(mod),
        "traces": real_candidates(N, 3),
        "target": CPU_TARGET,
    }
