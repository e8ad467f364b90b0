"""What a training run records per epoch: metrics (JSON lines and CSV), curves (PNG) and TensorBoard.

``metrics.jsonl`` holds one JSON object per epoch; ``metrics.csv`` the same
columns (:data:`CSV_COLUMNS`, notes joined by ``"; "``); ``curves.png`` two
panels, the training loss and the accuracies (train, val clean, val robust),
drawn with matplotlib's Agg backend. Each is rewritten whole and atomically
at every epoch's end. When ``torch.utils.tensorboard`` imports (the
``tensorboard`` package is installed), the same scalars go to
``OUT/tensorboard``; without it no TensorBoard log is written.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from advkit._internal import files

CSV_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_clean", "val_robust", "val_attack", "val_adaptive",
               "precision", "adversary_precision", "memory_format", "time", "notes")
FIGSIZE, DPI = (10.0, 4.0), 100  # curves.png is 1000 x 400 pixels


def write_metrics(out: Path, history: list[dict]) -> None:
    """``metrics.jsonl`` and ``metrics.csv`` for the whole history."""
    files.atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for h in history:
        row = {**h, "notes": "; ".join(h.get("notes") or [])}
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    files.atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())


def plot_curves(history: list[dict]):
    """A matplotlib figure with two panels: training loss, and accuracies per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="training loss")
    attack = next((h["val_attack"] for h in history if h.get("val_attack")), "attack")
    for key, label in (("train_acc", "train"), ("val_clean", "val clean"), ("val_robust", f"val {attack}")):
        pts = [(e, 100 * h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        if pts:
            acc_ax.plot(*zip(*pts), marker="o", label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def write_curves(out: Path, history: list[dict]) -> None:
    buf = io.BytesIO()
    plot_curves(history).savefig(buf, format="png", dpi=DPI)
    files.atomic_write_bytes(out / "curves.png", buf.getvalue())


class TensorBoard:
    """Scalars per epoch in ``OUT/tensorboard`` when ``torch.utils.tensorboard`` imports; otherwise nothing."""

    def __init__(self, out: Path | None):
        self.writer = None
        if out is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard package is optional (documented)
            return
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def log(self, record: dict) -> None:
        if self.writer is None:
            return
        for key in ("train_loss", "train_acc", "val_clean", "val_robust", "lr"):
            if record.get(key) is not None:
                self.writer.add_scalar(key.replace("_", "/", 1), float(record[key]), int(record["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_records(out: Path, history: list[dict], tensorboard: TensorBoard) -> None:
    """Everything the epoch records, before its state is committed."""
    write_metrics(out, history)
    write_curves(out, history)
    tensorboard.log(history[-1])


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def epoch_line(r: dict, epochs: int) -> str:
    """The line printed after every epoch."""
    parts = [f"epoch {r['epoch']}/{epochs}", f"lr {r['lr']:.4g}", f"loss {r['train_loss']:.4f}", f"train acc {_pct(r['train_acc'])}"]
    if r["val_clean"] is not None:
        parts.append(f"val clean {_pct(r['val_clean'])}")
    if r["val_robust"] is not None:
        adaptive = f" ({r['val_adaptive']})" if r.get("val_adaptive") else ""
        parts.append(f"val {r['val_attack']}{adaptive} {_pct(r['val_robust'])}")
    parts.append(f"{r['time']:.1f}s")
    return "  ".join(parts)


#: The optimisation steps after which a training loss still at chance level is said (once).
FIRST_STEPS = 10


def not_learning(loss: float, classes, optimizer: str, lr: float) -> list[str]:
    """A warning when the mean training loss of the epoch in which the run passed :data:`FIRST_STEPS` steps
    is still at chance level (ln K for K classes): the optimisation settings do not train this model."""
    import math

    chance = math.log(max(2, int(classes or 2)))
    if loss < 0.98 * chance:
        return []
    return [f"warning: the training loss ({loss:.3f}) has not fallen below chance level (ln {round(math.exp(chance))} "
            f"= {chance:.3f}): the model is not learning; try another --lr or --optimizer "
            f"(this run: {optimizer}, lr {lr})"]


def score(record: dict) -> float:
    """What ``best`` maximises: robust validation accuracy, else clean, else minus the training loss."""
    if record["val_robust"] is not None:
        return record["val_robust"]
    return record["val_clean"] if record["val_clean"] is not None else -record["train_loss"]
