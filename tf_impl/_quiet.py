"""``tf``: TensorFlow, imported without its start-up log lines unless the user asked for them.

TensorFlow prints a few lines to the process's stderr while it loads (``Could not find cuda
drivers`` on machines without a GPU, an absl notice), before any log level applies. When
``TF_CPP_MIN_LOG_LEVEL`` is ``"3"`` (the default :mod:`tf_impl` sets, and what the command lines use
unless ``--verbose``), file descriptor 2 points to ``/dev/null`` for the duration of the import
only; Python's own errors are raised after it is restored, so an import failure is still reported.
"""

from __future__ import annotations

import os
import sys


def _import_tensorflow():
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


tf = _import_tensorflow()
