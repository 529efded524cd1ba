"""Compile a model with (or without) tuned configs and time it: what ``tunehub compile`` reports.

The result is one flat, JSON-able dict, so a caller that needs a clean TVM
runtime (the demo times untuned and tuned builds each in a fresh process,
since two TVM thread pools in one process slow each other down) can run
``tunehub compile --json`` and read one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import BadInput


def read_model(path: Path) -> bytes:
    """The model's bytes; BadInput (not an OSError) when the file cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read the model {path}: {exc.strerror}") from None


def compile_and_time(
    model: Path,
    target: Mapping[str, Any],
    *,
    configs: Path | None = None,
    shapes: dict[str, list[int]] | None = None,
    out: Path | None = None,
    measure: bool = True,
    repeat: int = 10,
    min_repeat_ms: int = 50,
) -> dict[str, Any]:
    """Compile ``model`` for ``target`` (tuned when ``configs`` is a config folder) and time it.

    Returns the timing fields of ``tuner.compile.measure_latency`` (when
    ``measure``) plus ``tuned``, ``functions_tuned``, ``functions_total``,
    ``compile_s``, ``model`` and ``target``; writes the library to ``out`` if
    given. Raises TunehubError (BadInput for a bad model, shape or config folder).
    """
    from tuner.compile import compile_model_stats, measure_latency, set_num_threads

    set_num_threads(target)  # TVM reads it once, when its thread pool starts: before any kernel runs
    compiled = compile_model_stats(read_model(model), shapes, target, configs)
    if out is not None:
        compiled.exe.export_library(str(out))
    timing: dict[str, Any] = {}
    if measure:
        timing = measure_latency(
            compiled.exe, compiled.input_shapes, compiled.input_dtypes, target, repeat, min_repeat_ms
        )
    return {
        **timing,
        "tuned": configs is not None,
        "functions_tuned": compiled.functions_tuned,
        "functions_total": compiled.functions_total,
        "compile_s": round(compiled.compile_secs, 3),
        "model": str(model),
        "target": dict(target),
    }
