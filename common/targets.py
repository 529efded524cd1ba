"""TVM targets as JSON dicts: parsed from what a person types, canonicalised into a key.

Measurements compare only within one key. The key is the sorted JSON of TVM's
own export of the target, so two spellings of the same target share a key and
an unknown kind or option is rejected with TVM's reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import BadInput

TARGET_FORMS = 'a JSON object like {"kind": "llvm", "num-cores": 4}, a .json file holding one, a kind such as llvm'

# Kinds a tunehub worker serves; a job for any other kind would wait forever.
KINDS = ("llvm", "cuda")
MAX_CORES = 1024
# x86_64 and aarch64 Linux with glibc, in any vendor spelling (pc, unknown, none, conda).
TRIPLE = re.compile(r"(x86_64|aarch64)-([a-z0-9_]+-)?linux-gnu")
TRIPLES_ACCEPTED = "x86_64-linux-gnu, aarch64-linux-gnu (vendor spellings like x86_64-pc-linux-gnu too)"

_CUDA_COMMON = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152, "thread_warp_size": 32}
# Per-block limits by compute capability (CUDA C Programming Guide, "Compute Capabilities"):
# static shared memory is 48 KiB on all of them; the Tegra parts sm_53 and sm_62 have 32 Ki registers per block.
CUDA_ARCHS: dict[str, dict[str, int]] = {
    f"sm_{cc}": {**_CUDA_COMMON, "registers_per_block": 32768 if cc in (53, 62) else 65536}
    for cc in (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 110, 120, 121)
}


def cuda_limits(arch: str) -> dict[str, int]:
    """The per-block limits TVM's CUDA schedules need for ``arch`` (e.g. ``sm_80``); BadInput if unknown."""
    if arch not in CUDA_ARCHS:
        raise BadInput(f"unknown CUDA arch {arch!r}; accepted: {', '.join(CUDA_ARCHS)}")
    return dict(CUDA_ARCHS[arch])


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
    target = _completed(target)
    try:
        tvm_target = Target(target)
    except Exception as exc:  # TVM raises ValueError/TVMError with a useful message
        raise BadInput(f"unknown or invalid target {json.dumps(target)[:500]}: {str(exc)[:1000]}") from None
    _check_mcpu(tvm_target, target)
    if tvm_target.host is not None:
        _check_mcpu(tvm_target.host, dict(target["host"]) if isinstance(target.get("host"), Mapping) else {})
    exported = _plain(tvm_target.export())
    _check_complete(exported)
    if exported.get("tag") == "":
        del exported["tag"]  # TVM adds an empty tag; leave it out of the key
    if isinstance(exported.get("host"), dict) and exported["host"].get("tag") == "":
        del exported["host"]["tag"]
    key = json.dumps(exported, sort_keys=True, separators=(",", ":"))
    return exported, key


def _completed(target: dict[str, Any]) -> dict[str, Any]:
    """The target with what its kind needs filled in: a CUDA target gets its arch's per-block limits.

    Values given explicitly are kept, so a worker reporting its device's own limits still can.
    Raises BadInput for a kind no worker serves or a CUDA target without a known arch.
    """
    kind = target.get("kind")
    if kind not in KINDS:
        raise BadInput(f"unknown or unsupported target kind {str(kind)[:100]!r}; accepted kinds: {', '.join(KINDS)}")
    if kind != "cuda":
        return target
    arch = target.get("arch")
    if not isinstance(arch, str):
        raise BadInput(f"a cuda target needs an 'arch', one of {', '.join(CUDA_ARCHS)}; e.g. {{\"kind\": \"cuda\", \"arch\": \"sm_80\"}}")
    return {**cuda_limits(arch), **target}


def _check_complete(exported: dict[str, Any]) -> None:
    """Refuse what TVM accepts but no worker can build for: odd triples, core counts, a non-CPU host."""
    cores = exported.get("num-cores")
    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int) or not 1 <= cores <= MAX_CORES):
        raise BadInput(f"num-cores must be an integer in 1..{MAX_CORES}, got {cores!r}")
    triple = exported.get("mtriple")
    if exported.get("kind") == "llvm" and triple and not TRIPLE.fullmatch(str(triple)):
        raise BadInput(f"unknown mtriple {str(triple)[:100]!r}; accepted: {TRIPLES_ACCEPTED}")
    host = exported.get("host")
    if isinstance(host, dict):
        if host.get("kind") != "llvm":
            raise BadInput(f"a target's host must be an llvm target, got kind {str(host.get('kind'))[:100]!r}")
        _check_complete(host)


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
