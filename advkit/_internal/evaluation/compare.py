"""``advkit report``: several runs' ``report.json`` side by side, as Markdown, CSV or LaTeX."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from advkit._internal.errors import UserError
from advkit._internal.evaluation.report import NO_POINTS, wilson


def load_run(path: str | Path) -> dict:
    """A run's ``report.json``; a missing or unreadable one is a :class:`UserError`."""
    p = Path(path)
    f = p / "report.json" if p.is_dir() or not p.suffix else p
    if not f.is_file():
        raise UserError(f"{path}: no report.json there (write one with advkit eval --out {path})")
    from advkit._internal.schema import Fields, read_json

    run = Fields(read_json(f, "a report"), str(f))
    run.whole("n", 0)
    for key in ("clean_accuracy", "robust_accuracy"):
        if not 0 <= run.number(key) <= 1:
            raise run.fail(key, "a fraction in [0, 1]", run.data[key])
    run.mapping("threat_model")
    for a in run.items("attacks", dict):
        attack = Fields(a, f"{f} (attacks)")
        attack.text("name")
        if attack.has("accuracy") and not 0 <= attack.number("accuracy") <= 1:
            raise attack.fail("accuracy", "a fraction in [0, 1]", a["accuracy"])
    return run.data


def _eps_label(norm: str, eps) -> str:
    """As :class:`advkit._internal.threat.ThreatModel` prints it: ``8/255`` for Linf multiples of 1/255, else ``0.1``."""
    if not isinstance(eps, (int, float)):
        return ""
    k = eps * 255
    return f"{round(k)}/255" if norm == "Linf" and eps and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def comparison(runs: dict[str, dict]) -> tuple[list[str], list[list]]:
    """One row per run: model, data, threat, n, clean, each attack's accuracy after it, worst case, CI.

    Cells are strings, or floats (fractions) for accuracies; an attack a run did not have is ``None``,
    one that ran on no point is :data:`NO_POINTS`.
    """
    names: list[str] = []
    for r in runs.values():
        names += [a["name"] for a in r.get("attacks", []) if a["name"] not in names]
    head = ["run", "model", "dataset", "threat", "n", "clean"] + names + ["worst case", "passes", "95 % CI"]
    rows = []
    for label, r in runs.items():
        t = r.get("threat_model", {})
        eps = _eps_label(t.get("norm", ""), t.get("eps"))
        acc = {a["name"]: (NO_POINTS if a.get("attempted") == 0 else a.get("accuracy")) for a in r.get("attacks", [])}
        n = int(r.get("n", 0))
        rows.append([label, r.get("model", ""), (r.get("dataset") or {}).get("name", ""), f"{t.get('norm', '')} {eps}".strip(),
                     n, r.get("clean_accuracy")] + [acc.get(k) for k in names]
                    + [r.get("robust_accuracy"), _passes(r), wilson(round(r.get("robust_accuracy", 0) * n), n)])
    return head, rows


class Count(int):
    """A count of passes: shown as ``1.2M`` in tables, written exactly in CSV."""

    def short(self) -> str:
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if self >= size:
                return f"{self / size:.3g}{unit}"
        return str(int(self))


def _passes(run: dict):
    """All attacks' forward + backward passes of a run, or ``""`` for reports without counts."""
    counts = [a.get("passes") for a in run.get("attacks", [])]
    if any(c is None for c in counts):  # reports of versions that did not count
        return ""
    return Count(sum(int(c.get("forward", 0)) + int(c.get("backward", 0)) for c in counts))


def _cell(v, fmt: str) -> str:
    if v is None:
        return ""
    if isinstance(v, Count):
        return str(int(v)) if fmt == "csv" else v.short()
    if isinstance(v, tuple):
        return f"{100 * v[0]:.1f}{'--' if fmt == 'latex' else ' to '}{100 * v[1]:.1f}"
    if isinstance(v, float):
        return f"{100 * v:.2f}"
    if v == NO_POINTS and fmt != "md":
        return "n/a"
    return str(v)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(c, c) for c in text)


def format_comparison(runs: dict[str, dict], fmt: str = "md") -> str:
    """The comparison table as Markdown (``md``), ``csv`` or ``latex`` (booktabs); accuracies in %."""
    head, rows = comparison(runs)
    pct = {h: h + (" (%)" if i >= 5 and h != "passes" else "") for i, h in enumerate(head)}
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([pct[h] for h in head[:-1]] + ["ci95 low (%)", "ci95 high (%)"])
        for r in rows:
            ci = r[-1]
            w.writerow([_cell(v, fmt) for v in r[:-1]] + (["", ""] if ci is None else [f"{100 * ci[0]:.2f}", f"{100 * ci[1]:.2f}"]))
        return buf.getvalue()
    if fmt == "latex":
        lines = [r"\begin{tabular}{" + "l" * 4 + "r" * (len(head) - 4) + "}", r"\toprule",
                 " & ".join(_latex_escape(pct[h]) for h in head) + r" \\", r"\midrule"]
        lines += [" & ".join(_latex_escape(_cell(v, fmt)) for v in r) + r" \\" for r in rows]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
    if fmt != "md":
        raise UserError(f"--format must be md, csv or latex, got {fmt!r}")
    lines = ["| " + " | ".join(pct[h] for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(v, fmt).replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
