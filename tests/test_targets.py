"""Target parsing and canonicalisation: the forms a person types, one key per target, TVM's reasons for bad ones."""

import json
from pathlib import Path

import pytest

from common.errors import BadInput
from common.targets import CUDA_ARCHS, canonical_target, parse_target, target_label


def test_spellings_of_one_target_share_a_key() -> None:
    a = canonical_target({"kind": "llvm", "mcpu": "znver3", "num-cores": 4})
    b = canonical_target('{"num-cores": 4, "mcpu": "znver3", "kind": "llvm", "keys": ["cpu"]}')
    assert a[1] == b[1]
    assert a[0]["mcpu"] == "znver3"
    assert target_label(a[0]) == "llvm znver3 x4"


def test_different_targets_have_different_keys() -> None:
    keys = {
        canonical_target(t)[1]
        for t in ({"kind": "llvm"}, {"kind": "llvm", "mcpu": "znver3"}, {"kind": "cuda", "arch": "sm_90"})
    }
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ({"kind": "nope"}, "accepted kinds: llvm, cuda"),
        ({"kind": "llvm", "bogus-option": 1}, "bogus-option"),
        ({"kind": "llvm", "mcpu": "znver33"}, "did you mean znver3"),
        ({"mcpu": "znver3"}, "needs"),
        ([1, 2], "JSON object"),
        ({"kind": "cuda", "arch": "sm_99999"}, "accepted: sm_50"),
        ({"kind": "cuda"}, "needs an 'arch'"),
        ({"kind": "llvm", "num-cores": -5}, "1..1024"),
        ({"kind": "llvm", "num-cores": 1025}, "1..1024"),
        ({"kind": "llvm", "mtriple": "evil-none-none"}, "accepted: x86_64-linux-gnu"),
        ({"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm", "mtriple": "evil-x"}}, "evil-x"),
        ({"kind": "opencl"}, "accepted kinds: llvm, cuda"),
    ],
)
def test_bad_targets_say_why(target: object, needle: str) -> None:
    with pytest.raises(BadInput) as err:
        canonical_target(target)  # type: ignore[arg-type]
    assert needle in err.value.detail or needle in str(err.value)


def test_parse_target_forms(tmp_path: Path) -> None:
    want = {"kind": "llvm", "num-cores": 2}
    path = tmp_path / "target.json"
    path.write_text(json.dumps(want))
    assert parse_target(json.dumps(want)) == want
    assert parse_target(str(path)) == want
    assert parse_target("llvm") == {"kind": "llvm"}
    assert parse_target(" local ", local=lambda: want) == want
    assert canonical_target(str(path))[1] == canonical_target(want)[1]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("local", "only known on the machine"),
        ('{"kind": "llvm"', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("missing.json", "cannot read the --target file"),
    ],
)
def test_parse_target_says_why(text: str, needle: str) -> None:
    with pytest.raises(BadInput, match="--target") as err:
        parse_target(text, what="--target")
    assert needle in err.value.detail


def test_cuda_targets_are_completed_from_the_arch_table() -> None:
    """What the tuner needs is filled in; a worker's own values (e.g. detected) are kept."""
    bare, key = canonical_target({"kind": "cuda", "arch": "sm_80"})
    assert bare["max_threads_per_block"] == 1024 and bare["max_shared_memory_per_block"] == 49152
    assert bare["thread_warp_size"] == 32 and bare["registers_per_block"] == 65536
    explicit = {"kind": "cuda", "arch": "sm_80", **CUDA_ARCHS["sm_80"]}
    assert canonical_target(explicit)[1] == key  # a worker listing the same limits serves the same key
    assert canonical_target({"kind": "cuda", "arch": "sm_53"})[0]["registers_per_block"] == 32768
    assert canonical_target({**explicit, "max_shared_memory_per_block": 1024})[1] != key
    assert {"sm_50", "sm_90", "sm_120"} <= set(CUDA_ARCHS)


@pytest.mark.parametrize("triple", ["x86_64-linux-gnu", "x86_64-pc-linux-gnu", "aarch64-linux-gnu", "aarch64-unknown-linux-gnu"])
def test_linux_gnu_triples_are_accepted(triple: str) -> None:
    assert canonical_target({"kind": "llvm", "mtriple": triple, "num-cores": 1024})[0]["mtriple"] == triple
