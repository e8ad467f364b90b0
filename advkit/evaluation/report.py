"""Writing evaluation reports: ``report.json``, ``report.md``, ``results.csv`` and ``robustness_curve.png``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from advkit.checkpoint import atomic_write_bytes, atomic_write_json


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def markdown(report) -> str:
    """The result table (also printed by ``advkit eval``)."""
    m = report.meta
    lines = [
        f"# advkit eval: {m.get('model', '')} on {m.get('dataset', {}).get('name', '')} "
        f"({report.n} points, {report.threat}, seed {m.get('seed')})",
        "",
    ]
    for note in m.get("adaptive", []):
        lines.append(f"> {note}")
    if m.get("adaptive"):
        lines.append("")
    indep = any(a.independent_accuracy is not None for a in report.attacks)
    head = "| attack | implementation | accuracy after (%) |" + (" alone (%) |" if indep else "") + " time (s) |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    lines.append(f"| clean | | {_pct(report.clean_accuracy)} |" + (" |" if indep else "") + " |")
    for a in report.attacks:
        row = f"| {a.name} | {a.implementation} | {_pct(a.accuracy)} |"
        if indep:
            row += f" {_pct(a.independent_accuracy)} |"
        lines.append(row + f" {a.seconds:.1f} |")
    lines.append(f"| **worst case** | | **{_pct(report.robust_accuracy)}** |" + (" |" if indep else "") + " |")
    mode = "each attack on every clean-correct point, worst case over all" if indep else "each attack on the points earlier attacks failed on"
    lines += ["", f"Mode: {mode}."]
    if report.sweep:
        names = list(report.sweep[0]["attacks"])
        lines += ["", "## Robust accuracy (%) vs eps", "", "| eps | " + " | ".join(names) + " | worst case |", "|---" * (len(names) + 2) + "|"]
        for row in report.sweep:
            lines.append(f"| {row['eps_label']} | " + " | ".join(_pct(row["attacks"][k]) for k in names) + f" | {_pct(row['worst_case'])} |")
    if report.audit:
        lines += ["", "## Audit (Carlini et al. 2019)", "", "| check | result | detail |", "|---|---|---|"]
        for c in report.audit:
            lines.append(f"| {c['check']} | {'pass' if c['passed'] else '**FLAGGED**'} | {c['detail']} |")
    return "\n".join(lines) + "\n"


def write_csv(report, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "label", "clean_pred", "clean_correct", "robust", "broken_by", "perturbation_norm"])
    for s in report.samples:
        robust = s["clean_correct"] and not s["broken_by"]
        w.writerow([s["index"], s["label"], s["clean_pred"], int(s["clean_correct"]), int(robust), s["broken_by"], "" if s["norm"] is None else f"{s['norm']:.6g}"])
    atomic_write_bytes(path, buf.getvalue().encode())


def plot_curve(report, path: Path) -> None:
    """Accuracy vs eps, one line per attack and the worst case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_reports(report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report.as_dict())
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    write_csv(report, out / "results.csv")
    if report.sweep:
        plot_curve(report, out / "robustness_curve.png")
