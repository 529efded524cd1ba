"""Target parsing and canonicalisation: the forms a person types, one key per target, TVM's reasons for bad ones."""

import json
from pathlib import Path

import pytest

from common.errors import BadInput
from common.targets import canonical_target, parse_target, target_label


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
