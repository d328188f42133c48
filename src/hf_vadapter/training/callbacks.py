"""Run logs beside the Trainer's own loggers: every logged value appended to a CSV, and a loss curve at the end."""

import csv
import math
import os
from pathlib import Path
from typing import Dict, List, Optional

from transformers import TrainerCallback

CSV_NAME = "log.csv"
CURVE_NAME = "loss_curve.png"
CSV_COLUMNS = ("step", "epoch", "name", "value")


class CSVLoggerCallback(TrainerCallback):
    """Append each logged number to `<output_dir>/log.csv` as rows `step, epoch, name, value` (main process only).

    One row per value keeps the file appendable while the set of logged names changes (training loss, eval metrics,
    final speed figures). Load it with `pandas.read_csv(...).pivot_table(index="step", columns="name")`.
    """

    def __init__(self, path: Optional[str] = None):
        self.path = path

    def _file(self, args) -> Path:
        return Path(self.path or os.path.join(args.output_dir, CSV_NAME))

    def on_log(self, args, state, control, logs: Optional[Dict[str, float]] = None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = self._file(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(CSV_COLUMNS)
            for name, value in logs.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    epoch = "" if state.epoch is None else f"{state.epoch:.4f}"
                    writer.writerow((state.global_step, epoch, name, value))


def loss_series(log_history: List[Dict[str, float]]) -> Dict[str, List[tuple]]:
    """(step, value) pairs of the training loss and the evaluation loss from a Trainer's `state.log_history`."""
    series: Dict[str, List[tuple]] = {"loss": [], "eval_loss": []}
    for entry in log_history:
        for name in series:
            value = entry.get(name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                series[name].append((entry["step"], value))
    return series


def plot_loss_curve(log_history: List[Dict[str, float]], path) -> Optional[Path]:
    """Draw the training (and evaluation) loss against the step into a PNG; None when nothing was logged."""
    series = loss_series(log_history)
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    labels = {"loss": "training loss", "eval_loss": "evaluation loss"}
    for name, points in series.items():
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=labels[name])
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


class LossCurveCallback(TrainerCallback):
    """Write `<output_dir>/loss_curve.png` when training ends (main process only; matplotlib's Agg backend)."""

    def __init__(self, path: Optional[str] = None):
        self.path = path

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_loss_curve(state.log_history, self.path or os.path.join(args.output_dir, CURVE_NAME))
