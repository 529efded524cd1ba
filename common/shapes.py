"""Model input shapes, ``{"x": [1, 3, 32, 32]}``: one parser for the CLI and the API.

Two spellings are accepted, alone or mixed: ``name=d0,d1,...`` items (the CLI's
repeatable ``--shape x=1,3,32,32``; several in one text separated by ``;``) and a
JSON object (the API's ``input_shapes`` form field). Both give
``{name: [positive int, ...]}``, bounded so a request cannot ask for absurd
sizes; anything else is BadInput naming the item and showing the expected form.
Whether the names and ranks fit the model is for the tuner's intake to say: it
has the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import BadInput

MAX_TEXT = 64 * 1024  # characters of shape text in one request
MAX_INPUTS = 256  # named inputs
MAX_RANK = 16  # dimensions per input
MAX_DIM = 2**31 - 1  # TVM indexes with int32 by default

Shapes = dict[str, list[int]]
EXAMPLE = 'x=1,3,32,32 or {"x": [1, 3, 32, 32]}'


def parse_shapes(value: str | Sequence[str] | Mapping[str, Any] | None, *, what: str = "input shapes") -> Shapes | None:
    """Shapes from text, a list of texts (one per ``--shape``) or a mapping; None when none are given.

    ``what`` names the source in error messages (``--shape``, ``input_shapes``).
    Raises BadInput for malformed text, non-positive or non-integer dims, a
    name given twice with different dims, or a size over the bounds above.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        return _bounded(_from_mapping(value, what), what) or None
    texts = [value] if isinstance(value, str) else list(value)
    if sum(len(t) for t in texts) > MAX_TEXT:
        raise BadInput(f"{what} is over {MAX_TEXT} characters; models have a few inputs, e.g. {EXAMPLE}")
    shapes: Shapes = {}
    for text in texts:
        for name, dims in _from_text(text, what).items():
            if shapes.get(name, dims) != dims:
                raise BadInput(f"{what} gives input {name!r} twice, as {shapes[name]} and {dims}; give it once")
            shapes[name] = dims
    return _bounded(shapes, what) or None


def _from_text(text: str, what: str) -> Shapes:
    text = text.strip()
    if not text:
        return {}
    if text[0] in "{[":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{what} is not valid JSON ({exc}); expected e.g. {EXAMPLE}") from None
        if not isinstance(value, Mapping):
            raise BadInput(f"{what} must be a JSON object like {{\"x\": [1, 3, 32, 32]}} (or x=1,3,32,32), got {text[:200]!r}")
        return _from_mapping(value, what)
    shapes: Shapes = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, dims = item.rpartition("=")
        if not sep or not name.strip():
            raise BadInput(f"{what} wants name=d0,d1,... (e.g. {EXAMPLE}); got {item!r}")
        try:
            values = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise BadInput(f"{what} wants integer dims in name=d0,d1,... (e.g. x=1,3,32,32); got {item!r}") from None
        if name.strip() in shapes:
            raise BadInput(f"{what} gives input {name.strip()!r} twice; give it once")
        shapes[name.strip()] = _dims(name.strip(), values, what)
    return shapes


def _from_mapping(value: Mapping[Any, Any], what: str) -> Shapes:
    shapes: Shapes = {}
    for name, dims in value.items():
        if not isinstance(name, str) or not name:
            raise BadInput(f"{what} names inputs by non-empty strings, got {name!r}")
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
            raise BadInput(f"{what}[{name!r}] must be a list of positive integers, got {dims!r}")
        shapes[name] = _dims(name, list(dims), what)
    return shapes


def _dims(name: str, dims: list[Any], what: str) -> list[int]:
    if len(dims) > MAX_RANK:
        raise BadInput(f"{what}[{name!r}] has rank {len(dims)}, over the limit of {MAX_RANK}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise BadInput(f"{what}[{name!r}] must be a list of positive integers, got {dims!r}")
        if d > MAX_DIM:
            raise BadInput(f"{what}[{name!r}] has a dimension of {d}, over the limit of {MAX_DIM}")
    return [int(d) for d in dims]


def _bounded(shapes: Shapes, what: str) -> Shapes:
    if len(shapes) > MAX_INPUTS:
        raise BadInput(f"{what} names {len(shapes)} inputs, over the limit of {MAX_INPUTS}")
    return shapes


def check_bounds(shapes: Mapping[str, Sequence[int]], *, max_dim: int, max_elements: int, what: str = "input shapes") -> None:
    """BadInput if a shape has a dimension over ``max_dim`` or more than ``max_elements`` elements.

    Checked before any work (and before a model is stored), so a size no
    machine could tune never reaches TVM and never blocks a corrected upload.
    """
    for name, dims in shapes.items():
        for d in dims:
            if d > max_dim:
                raise BadInput(f"{what}[{name!r}] has a dimension of {d}, over the limit of {max_dim} (TUNEHUB_INTAKE_MAX_DIM)")
        elements = 1
        for d in dims:
            elements *= int(d)
        if elements > max_elements:
            raise BadInput(
                f"{what}[{name!r}] = {list(dims)} has {elements:.3g} elements, over the limit of "
                f"{max_elements} per tensor (TUNEHUB_INTAKE_MAX_TENSOR_ELEMENTS)"
            )
