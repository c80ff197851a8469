"""Copy a run's checkpoint into the shipped models: its weights and metadata, without the resume state, with the
paths under the runs folder written as ``runs/...`` (the default), so that no machine path is shipped.

    python scripts/ship_checkpoint.py SRC DST RUNS_DIR --overwrite-shipped
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.checkpoint import load_checkpoint, load_checkpoint_extra, save_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="the run's checkpoint (final.npz)")
    p.add_argument("dst", help="the shipped file (reference/pretrained/<name>.npz)")
    p.add_argument("runs", help="the runs folder the run's paths start with")
    p.add_argument("--overwrite-shipped", action="store_true", help="required: DST is a shipped model")
    args = p.parse_args(argv)
    if not args.overwrite_shipped:
        p.error("writing a shipped model needs --overwrite-shipped")
    params, cfg = load_checkpoint(args.src)
    meta = json.loads(json.dumps(load_checkpoint_extra(args.src)[0]).replace(args.runs.rstrip("/") + "/", "runs/"))
    save_checkpoint(args.dst, params, cfg, meta=meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
