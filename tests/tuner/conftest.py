"""Fixtures for the tuner tests: the example ONNX models and a CPU target."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
if str(TESTS) not in sys.path:  # for `from tvm_helpers import ...`
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def make_models() -> ModuleType:
    """examples/make_models.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("tunehub_make_models", ROOT / "examples" / "make_models.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_models(make_models: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of mlp.onnx and convnet.onnx: the shipped files, checked to be what the script makes."""
    paths = {name: ROOT / "examples" / f"{name}.onnx" for name in ("mlp", "convnet")}
    fresh = tmp_path_factory.mktemp("models")
    make_models.main([str(fresh)])
    for name, path in paths.items():
        assert path.is_file(), f"{path} missing: run `python examples/make_models.py`"
        assert path.read_bytes() == (fresh / path.name).read_bytes(), f"{path} is stale: rerun examples/make_models.py"
    return paths


@pytest.fixture(scope="session")
def mlp_bytes(example_models: dict[str, Path]) -> bytes:
    return example_models["mlp"].read_bytes()


@pytest.fixture(scope="session")
def convnet_bytes(example_models: dict[str, Path]) -> bytes:
    return example_models["convnet"].read_bytes()


@pytest.fixture(scope="session")
def cpu_target() -> dict[str, Any]:
    from tvm_helpers import CPU_TARGET

    return dict(CPU_TARGET)
