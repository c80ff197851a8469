"""Loss curves of training runs, read from their TensorBoard events (``RUN/tb``), and their final tables
(``RUN/final.npz``): one JSON and one plot.

For each run: the evaluation loss (the fixed evaluation batch, every ``eval_every`` steps) and the
training loss averaged over windows of ``--window`` steps, against the step; the plot draws both
(evaluation: markers and solid line, training: thin line) on a log scale, one colour per run.

    python scripts/training_curves.py runs/full-n9-long runs/block-n9-long --out results/claim3/curves
    (writes curves.json and curves.png; --labels names the runs, default their folder names)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from reference.checkpoint import load_checkpoint_extra
from reference.report import OVERWRITE_FLAG, checked_output


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value)]`` from every event file of ``run/tb``, sorted by step."""
    from tf_impl._quiet import tf  # here, not at import: --help answers without loading TensorFlow

    files = sorted((run / "tb").glob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"error: no TensorBoard events in {run / 'tb'}")
    out: dict[str, dict[int, float]] = {}
    for record in tf.data.TFRecordDataset([str(f) for f in files]):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for v in event.summary.value:
            value = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else float(v.simple_value)
            out.setdefault(v.tag, {})[int(event.step)] = value  # a resumed run rewrites steps: the last wins
    return {tag: sorted(values.items()) for tag, values in out.items()}


def curves(run: Path, window: int) -> dict:
    """The run's curves, and (when ``run/final.npz`` exists) its steps, training time and final table."""
    scalars = read_scalars(run)
    train = scalars.get("loss", [])
    steps = np.array([s for s, _ in train])
    values = np.array([v for _, v in train])
    smooth = [(int(steps[i:i + window][-1]), float(np.mean(values[i:i + window])))
              for i in range(0, len(steps) - window + 1, window)]
    out = {"eval_loss": scalars.get("eval_loss", []), "train_loss_windowed": smooth}
    if (run / "final.npz").exists():
        meta, _ = load_checkpoint_extra(run / "final.npz")
        out.update(steps=meta.get("step"), train_time_s=meta.get("metrics", {}).get("train_time_s"),
                   final_evaluation=meta.get("evaluation"), train_config=meta.get("train_config"))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--labels", nargs="*", default=None)
    p.add_argument("--window", type=int, default=100, help="training-loss averaging window (steps)")
    p.add_argument("--title", default="Loss curves")
    p.add_argument("--out", required=True, help="output stem: writes OUT.json and OUT.png")
    p.add_argument(OVERWRITE_FLAG, action="store_true", help="allow --out inside results/, whose files are committed "
                   "with the project")
    args = p.parse_args(argv)
    checked_output(p, args)
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("error: give one label per run")
    data = {label: curves(run, args.window) for label, run in zip(labels, args.runs, strict=True)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": [str(r) for r in args.runs], "curves": data}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, c) in enumerate(data.items()):
        color = colors[i % len(colors)]
        if c["train_loss_windowed"]:
            ax.plot(*zip(*c["train_loss_windowed"], strict=True), lw=0.8, alpha=0.5, color=color)
        if c["eval_loss"]:
            ax.plot(*zip(*c["eval_loss"], strict=True), "o-", ms=3, color=color, label=f"{label} (evaluation)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (thin: training, mean of {args.window} steps)")
    ax.set_title(args.title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return data


if __name__ == "__main__":
    main()
