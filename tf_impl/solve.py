"""``tf_impl.solve(A, b, model="auto", x0=None)``: :func:`reference.solve.solve` running the TensorFlow model."""

from __future__ import annotations

import numpy as np

from reference.solve import solve_with
from tf_impl.model import forward


def solve(A, b, model="auto", x0=None) -> np.ndarray:
    """Approximate ``x`` with ``A x = b`` (``A`` SPD) by a trained model, in TensorFlow (float64)."""
    return solve_with(forward, A, b, model, x0)
