"""``tf_impl.solve(A, b, ...)`` and ``tf_impl.factorize(A)``: :func:`reference.solve.solve` and
:func:`reference.solve.factorize` running the TensorFlow model.

Validation, model resolution (``"auto"``, shipped names, checkpoint paths, ``(params, cfg)``), the
power-of-two unit scale, the normalisation and odd part of every pass, the passes to ``tol``, the
memory chunks, the errors and the warnings are the reference's (:func:`reference.solve.solve_with`,
:func:`reference.solve.factorize_with`); only the model differs: :func:`tf_impl.model.forward` and
:func:`tf_impl.model.approximate_inverse` in float64, XLA-compiled.
"""

from __future__ import annotations

import functools

import numpy as np

from reference.solve import Factorization, SolveResult, factorize_with, solve_with
from tf_impl.model import approximate_inverse, forward

# float64 and the structured fast path, explicit: equal to reference.solve to ~1e-12
_forward64 = functools.partial(forward, structured=True, dtype="float64")
_inverse64 = functools.partial(approximate_inverse, dtype="float64")


def solve(A, b, model="auto", x0=None, *, tol=None, max_passes=None, return_info=False,
          strict=False) -> np.ndarray | SolveResult:
    """Solve ``A x = b`` (``A`` SPD) with a trained model in TensorFlow (float64), to ``tol`` if asked.

    Same arguments, result, errors and warnings as :func:`reference.solve.solve`.
    """
    return solve_with(_forward64, A, b, model, x0, tol=tol, max_passes=max_passes, return_info=return_info,
                      strict=strict, operator_fn=_inverse64)


def factorize(A, model="auto") -> Factorization:
    """Factor ``A`` once (TensorFlow, float64): :func:`reference.solve.factorize`, the same arguments and result."""
    return factorize_with(_forward64, _inverse64, A, model)
