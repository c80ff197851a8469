"""``tf_impl.solve(A, b, model="auto", x0=None)``: :func:`reference.solve.solve` running the TensorFlow model.

Validation, model resolution (``"auto"``, shipped names, checkpoint paths, ``(params, cfg)``) and
the out-of-range warning are the reference's (:func:`reference.solve.solve_with`); only the
forward pass differs: :func:`tf_impl.model.forward` in float64, XLA-compiled.
"""

from __future__ import annotations

import functools

import numpy as np

from reference.solve import solve_with
from tf_impl.model import forward

_forward64 = functools.partial(forward, dtype="float64")  # explicit: equal to reference.solve to ~1e-12


def solve(A, b, model="auto", x0=None) -> np.ndarray:
    """Approximate ``x`` with ``A x = b`` (``A`` SPD) by a trained model, in TensorFlow (float64).

    Same arguments, result, errors and warnings as :func:`reference.solve.solve`.
    """
    return solve_with(_forward64, A, b, model, x0)
