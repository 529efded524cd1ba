"""Is a candidate's output right? Inputs, tolerances and the comparison.

A schedule may reorder arithmetic, never change what is computed: every buffer
after the candidate's run must match the untuned build's on the same random
inputs, within what the dtype's rounding allows. Used inside the sandbox;
numpy only (ml_dtypes for bf16/float8), no TVM.
"""

from __future__ import annotations

import numpy as np

# Largest allowed |candidate - reference|, as a fraction of the reference's largest
# magnitude. Loose for 16-bit floats: tuned and untuned code accumulate in different
# orders (TVM_NOTES §7 saw 7.6e-3 relative error for fp16 and 6.6e-2 for bf16
# against fp32), while a wrong schedule is off by about the values themselves.
_REL_TOLERANCE = {"float64": 1e-6, "float32": 1e-3, "float16": 3e-2, "bfloat16": 1e-1}
_DEFAULT_FLOAT_TOLERANCE = 2.5e-1  # float8 and other narrow formats


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a TVM dtype name; bf16 and float8 come from ml_dtypes."""
    if name == "bool":
        return np.dtype(np.bool_)
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        if not hasattr(ml_dtypes, name):
            raise ValueError(f"unsupported dtype {name!r}") from None
        return np.dtype(getattr(ml_dtypes, name))


def random_array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Floats in [-1, 1); ints in [0, 4) so index-like inputs stay in bounds."""
    np_dtype = numpy_dtype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 4, size=shape).astype(np_dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32).astype(np_dtype)


def compare(name: str, dtype: str, got: np.ndarray, want: np.ndarray) -> str | None:
    """None when ``got`` matches ``want`` within ``dtype``'s tolerance, else why not."""
    if dtype == "bool" or dtype.startswith(("int", "uint")):
        if np.array_equal(got, want):
            return None
        wrong = int(np.count_nonzero(got != want))
        return f"buffer {name}: {wrong} of {want.size} elements differ"
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    finite = np.isfinite(w)
    if not np.array_equal(np.isfinite(g), finite) or not np.array_equal(g[~finite], w[~finite], equal_nan=True):
        return f"buffer {name}: NaN/inf where the reference has none (or the reverse)"
    if not finite.any():
        return None
    err = float(np.abs(g[finite] - w[finite]).max())
    scale = float(np.abs(w[finite]).max())
    bound = _REL_TOLERANCE.get(dtype, _DEFAULT_FLOAT_TOLERANCE) * (scale + 1e-3)
    if err <= bound:
        return None
    return f"buffer {name} max abs err {err:.4g} (tolerance {bound:.3g}, largest reference value {scale:.4g})"
