"""``tf_impl.solve(A, b, ...)``: :func:`reference.solve.solve` running the TensorFlow model.

Validation, model resolution (``"auto"``, shipped names, checkpoint paths, ``(params, cfg)``), the
power-of-two unit scale, the normalisation and odd part of every pass, the passes to ``tol``, the
memory chunks, the errors and the warnings are the reference's (:func:`reference.solve.solve_with`);
only the forward pass differs:
:func:`tf_impl.model.forward` in float64, XLA-compiled.
"""

from __future__ import annotations

import functools

import numpy as np

from reference.solve import SolveResult, solve_with
from tf_impl.model import forward

# float64 and the structured fast path, explicit: equal to reference.solve to ~1e-12
_forward64 = functools.partial(forward, structured=True, dtype="float64")


def solve(A, b, model="auto", x0=None, *, tol=None, max_passes=None, return_info=False,
          strict=False) -> np.ndarray | SolveResult:
    """Solve ``A x = b`` (``A`` SPD) with a trained model in TensorFlow (float64), to ``tol`` if asked.

    Same arguments, result, errors and warnings as :func:`reference.solve.solve`.
    """
    return solve_with(_forward64, A, b, model, x0, tol=tol, max_passes=max_passes, return_info=return_info,
                      strict=strict)
