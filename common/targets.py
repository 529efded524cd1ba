"""TVM targets as JSON dicts: parsed from what a person types, canonicalised into a key.

Measurements compare only within one key. The key is the sorted JSON of TVM's
own export of the target, so two spellings of the same target share a key and
an unknown kind or option is rejected with TVM's reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import BadInput

TARGET_FORMS = 'a JSON object like {"kind": "llvm", "num-cores": 4}, a .json file holding one, a kind such as llvm'


def parse_target(
    value: str | Mapping[str, Any],
    *,
    local: Callable[[], dict[str, Any]] | None = None,
    what: str = "target",
) -> dict[str, Any]:
    """A target dict from JSON text, a ``.json`` file path, a bare kind (``llvm``) or ``local``.

    ``local`` is the caller's detector for this machine's target (the CLI passes
    the worker's CPU detection; ``common`` cannot import it); without one,
    ``local`` is refused. Only the form is checked here, so it needs no TVM:
    :func:`canonical_target` validates the contents. Raises BadInput.
    """
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise BadInput(f"{what} must be {TARGET_FORMS}; got {value!r}")
    text = value.strip()
    if text == "local":
        if local is None:
            raise BadInput(f"{what} 'local' (this machine) is only known on the machine itself; give {TARGET_FORMS}")
        return local()
    if not text.startswith(("{", "[")) and text.endswith(".json"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise BadInput(f"cannot read the {what} file {value}: {exc.strerror}") from None
    if not text.startswith(("{", "[")) and text.replace("-", "").replace("_", "").isalnum():
        return {"kind": text}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not valid JSON ({exc}); give {TARGET_FORMS}, or local") from None
    if not isinstance(parsed, dict):
        raise BadInput(f"{what} must be a JSON object (with a 'kind'); give {TARGET_FORMS}; got {text[:200]!r}")
    return parsed


def _plain(obj: Any) -> Any:
    """Turn TVM FFI containers (Map, Array, String) into JSON-able Python values."""
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, str):
        return str(obj)
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        return [_plain(v) for v in obj]
    kind = getattr(obj, "name", None)  # TargetKind
    if kind is not None:
        return str(kind)
    return str(obj)


def canonical_target(target: Mapping[str, Any] | str) -> tuple[dict[str, Any], str]:
    """Validate a target (a dict, or any text :func:`parse_target` reads) and return (canonical JSON dict, key).

    Raises BadInput with TVM's message for an unknown kind or option.
    """
    from tvm.target import Target  # heavy; only where used

    if isinstance(target, (str, Mapping)):
        target = parse_target(target)
    if not isinstance(target, dict) or "kind" not in target:
        raise BadInput(f"target must be a JSON object with a 'kind' (it needs one), e.g. {{\"kind\": \"llvm\"}}; got {target!r}")
    try:
        tvm_target = Target(target)
    except Exception as exc:  # TVM raises ValueError/TVMError with a useful message
        raise BadInput(f"unknown or invalid target {json.dumps(target)}: {exc}") from None
    _check_mcpu(tvm_target, target)
    exported = _plain(tvm_target.export())
    if exported.get("tag") == "":
        del exported["tag"]  # TVM adds an empty tag; leave it out of the key
    key = json.dumps(exported, sort_keys=True, separators=(",", ":"))
    return exported, key


def _check_mcpu(tvm_target: Any, raw: dict[str, Any]) -> None:
    """Reject an LLVM ``mcpu`` that LLVM does not know for the target's triple.

    TVM accepts any string there, and a typo would make a target key no worker
    ever serves: its jobs would wait forever.
    """
    mcpu = raw.get("mcpu")
    if tvm_target.kind.name != "llvm" or not mcpu or mcpu == "generic":
        return
    from tvm.target.codegen import llvm_get_cpu_archlist

    known = [str(c) for c in llvm_get_cpu_archlist(tvm_target)]
    if known and mcpu not in known:
        import difflib

        close = difflib.get_close_matches(str(mcpu), known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BadInput(f"unknown mcpu {mcpu!r} for this target's triple{hint} (workers report theirs at registration)")


def target_label(target: dict[str, Any]) -> str:
    """A short human label, e.g. 'llvm znver3 x2' or 'cuda sm_90'."""
    parts = [str(target.get("kind", "?"))]
    for field in ("mcpu", "arch", "mtriple"):
        if target.get(field):
            parts.append(str(target[field]))
    if target.get("num-cores"):
        parts.append(f"x{target['num-cores']}")
    return " ".join(parts)
