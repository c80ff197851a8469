"""Execute the tutorial notebooks in place, so that they are committed with fresh outputs.

    python scripts/run_tutorials.py                         # every tutorials/*.ipynb
    python scripts/run_tutorials.py tutorials/02_one_layer.ipynb [...]

Each notebook runs top to bottom in a fresh ``python3`` kernel with its own folder as the working
directory, the repository root on ``PYTHONPATH``, ``MPLBACKEND=Agg`` and ``TF_CPP_MIN_LOG_LEVEL=3``, the level
:mod:`tf_impl` sets when a reader's Jupyter has none (the kernel passes what TensorFlow's C++ runtime writes to
its stderr into the notebook); a cell that raises stops
the run with a non-zero exit status and the notebook is left unchanged. ``tests/test_tutorials.py``
uses :func:`execute_notebook` too, and checks that the committed notebooks were run this way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
KERNEL = "python3"
CELL_TIMEOUT = 300  # seconds per cell


def kernel_env() -> dict[str, str]:
    """Environment of the kernel: the repository importable, a non-interactive Matplotlib backend, no
    TensorFlow log lines (whatever the caller's environment says: they would land in the outputs)."""
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"  # tf_impl's default: at it, tf_impl also hides what TF prints while it loads
    return env


def execute_notebook(path: Path, cwd: Path | None = None, timeout: int = CELL_TIMEOUT) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom and return it with its outputs (``path`` is not written).

    ``cwd`` is the kernel's working directory (default: the notebook's folder). Raises
    ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    nb = nbformat.read(path, as_version=4)
    # coalesce_streams: a cell's prints are one output however the kernel happened to flush them
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, allow_errors=False, record_timing=False,
                            coalesce_streams=True, resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    client.execute(env=kernel_env())  # passed on to the kernel manager's start_kernel
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every tutorials/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell (default: %(default)s)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(TUTORIALS.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {TUTORIALS}", file=sys.stderr)
        return 1
    failed = []
    for path in paths:
        t0 = time.perf_counter()
        try:
            nb = execute_notebook(path, timeout=args.timeout)
        except Exception as e:  # noqa: BLE001 - report every notebook, then fail
            print(f"FAILED  {path}: {type(e).__name__}\n{e}", file=sys.stderr)
            failed.append(path)
            continue
        nbformat.write(nb, path)
        print(f"ok      {path}  ({time.perf_counter() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
