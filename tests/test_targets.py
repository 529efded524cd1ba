"""Target canonicalisation: one key per target, TVM's reasons for bad ones."""

import pytest

from common.errors import BadInput
from common.targets import canonical_target, target_label


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
        ({"kind": "nope"}, "not defined"),
        ({"kind": "llvm", "bogus-option": 1}, "bogus-option"),
        ({"kind": "llvm", "mcpu": "znver33"}, "did you mean znver3"),
        ({"mcpu": "znver3"}, "needs"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_targets_say_why(target: object, needle: str) -> None:
    with pytest.raises(BadInput) as err:
        canonical_target(target)  # type: ignore[arg-type]
    assert needle in err.value.detail or needle in str(err.value)
