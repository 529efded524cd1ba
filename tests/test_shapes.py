"""common.shapes: one parser for --shape items and the API's JSON, bounded, with reasons a person can act on."""

from __future__ import annotations

import pytest

from common.errors import BadInput
from common.shapes import MAX_DIM, MAX_INPUTS, MAX_RANK, parse_shapes


def test_item_and_json_forms_agree() -> None:
    want = {"x": [1, 3, 32, 32], "mask": [1, 32]}
    assert parse_shapes(["x=1,3,32,32", "mask=1,32"]) == want
    assert parse_shapes("x=1,3,32,32; mask=1x32") == want
    assert parse_shapes('{"x": [1, 3, 32, 32], "mask": [1, 32]}') == want
    assert parse_shapes(['{"x": [1, 3, 32, 32]}', "mask=1,32"]) == want
    assert parse_shapes(want) == want


@pytest.mark.parametrize("empty", [None, "", "  ", [], "{}", {}])
def test_nothing_given_is_none(empty: object) -> None:
    assert parse_shapes(empty) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("x=a,b", "integer dims"),
        ("1,3,32", "name=d0,d1"),
        ("=1,3", "name=d0,d1"),
        ("x=1,0", "positive integers"),
        ("x=1,-2", "positive integers"),
        ('{"x": [1, 2.5]}', "positive integers"),
        ('{"x": "1,2"}', "positive integers"),
        ('{"x": [true]}', "positive integers"),
        ("{x: [1,", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (["x=1,2", "x=1,3"], "twice"),
        ("x=1;x=1", "twice"),
        (f"x={MAX_DIM + 1}", "over the limit"),
        ("x=" + ",".join(["1"] * (MAX_RANK + 1)), "rank"),
        ([f"i{n}=1" for n in range(MAX_INPUTS + 1)], "inputs, over the limit"),
        ("x=" + "1," * 40_000, "characters"),
    ],
)
def test_bad_shapes_say_why(value: object, needle: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_shapes(value, what="--shape")  # type: ignore[arg-type]
    assert needle in err.value.detail and "--shape" in err.value.detail
