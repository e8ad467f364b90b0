"""The figures of an evaluation report: ``per_class.png`` and ``robustness_curve.png`` (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path

from advkit._internal.evaluation.report import per_class
from advkit._internal.files import atomic_write_bytes


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(report, path: Path) -> None:
    """Accuracy vs eps, one line per attack and the worst case."""
    plt = _pyplot()
    eps = [r["eps"] for r in report.sweep]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name in report.sweep[0]["attacks"]:
        ax.plot(eps, [100 * r["attacks"][name] for r in report.sweep], marker="o", label=name)
    ax.plot(eps, [100 * r["worst_case"] for r in report.sweep], marker="s", color="black", linewidth=2, label="worst case")
    ax.set_xlabel(f"eps ({report.threat.norm})")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{report.meta.get('model', '')} on {report.meta.get('dataset', {}).get('name', '')}")
    fig.tight_layout()
    _save(fig, path)


def plot_per_class(report, path: Path) -> None:
    """Clean and robust accuracy per class as paired bars (one figure, one axis)."""
    plt = _pyplot()
    rows = per_class(report)
    width = max(6.0, 0.45 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(width, 4), dpi=100)
    pos = range(len(rows))
    ax.bar([p - 0.2 for p in pos], [100 * r["clean_accuracy"] for r in rows], width=0.4, label="clean")
    ax.bar([p + 0.2 for p in pos], [100 * r["robust_accuracy"] for r in rows], width=0.4, label="robust (worst case)")
    ax.set_xticks(list(pos), [r["name"] for r in rows], rotation=45 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 118)  # room for the legend above the 100 % bars
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.set_title(f"{report.meta.get('model', '')}: per-class accuracy ({report.threat})")
    fig.tight_layout()
    _save(fig, path)
