"""Writing evaluation reports: ``report.json``, ``report.md``, ``results.csv``, ``per_class.png`` and
``robustness_curve.png``; and the table comparing several runs (``advkit report DIR...``).

Every accuracy comes with its counts (attempted, broken) and a 95 % Wilson score interval (Wilson
1927), written here because it is one line of arithmetic: the interval stays inside [0, 1] and is
sensible at 0 % and 100 %, where the normal approximation collapses to a point. An attack that ran on
no point (earlier attacks broke everything) shows ``n/a (no points left)``, not 0 %.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from advkit._internal.files import atomic_write_bytes, atomic_write_json

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
NO_POINTS = "n/a (no points left)"
MAX_CLASSES_SHOWN = 100  # per-class table and chart; report.json always has every class


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for ``k`` successes in ``n`` trials (``None`` when ``n`` is 0)."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def scores(report, which: str) -> list[float]:
    """Per-point ``which`` (``"clean"`` or ``"robust"``) scores: the share of draws correct (0/1 when deterministic)."""
    out = []
    for s in report.samples:
        if f"{which}_score" in s:
            out.append(float(s[f"{which}_score"]))
        else:
            out.append(float(bool(s["clean_correct"]) and (which == "clean" or not s["broken_by"])))
    return out


def interval(report, which: str) -> tuple[float, float] | None:
    """95 % interval of the clean or robust accuracy: Wilson's for a deterministic model; for a random one, the
    normal interval of the mean per-point score (its spread holds the points' and the draws' variance)."""
    n, value = report.n, getattr(report, f"{which}_accuracy")
    if getattr(report, "draws", 1) <= 1 or not report.samples:
        return wilson(round(value * n), n)
    return mean_interval(scores(report, which))


def mean_interval(v: list[float]) -> tuple[float, float] | None:
    """95 % normal interval of the mean of per-point scores (shares of correct draws): its spread holds the
    points' and the draws' variance."""
    if not v:
        return None
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((a - mean) ** 2 for a in v) / max(len(v) - 1, 1))
    half = Z95 * sd / math.sqrt(len(v))
    return max(0.0, mean - half), min(1.0, mean + half)


def draw_error(report, which: str) -> float:
    """Standard error of the accuracy from the draws alone (a rerun with another seed moves it by about this)."""
    v, r = scores(report, which), getattr(report, "draws", 1)
    return math.sqrt(sum(p * (1 - p) for p in v) / (r - 1)) / len(v) if r > 1 and v else 0.0


def _span(ci) -> str:
    return "" if ci is None else f"{100 * ci[0]:.1f} to {100 * ci[1]:.1f}"


def _random_lines(report) -> list[str]:
    """What judging over draws means for this report, and the EOT sufficiency check."""
    if getattr(report, "draws", 1) <= 1:
        return []
    lines = ["", f"Random model: every point was judged over {report.draws} draws of its own; an accuracy is the "
             f"mean share of correct draws, its 95 % CI covers the points' and the draws' variance. From the draws "
             f"alone (a rerun with another seed): standard error {100 * draw_error(report, 'clean'):.2f} points "
             f"clean, {100 * draw_error(report, 'robust'):.2f} points robust."]
    e = report.eot_sufficiency or {}
    if e.get("rows"):
        accs = ", ".join(f"EOT {r['eot']}: {_pct(r['accuracy'])} %" for r in e["rows"])
        verdict = ("**still falling**: the attacks' EOT is not enough; raise --eot and check again"
                   if e["still_falling"] else "no longer falling: EOT is sufficient for this attack")
        lines += ["", f"EOT sufficiency ({e['attack']} on a seeded sample of {e['points']} points): {accs}; {verdict}."]
    elif e.get("skipped"):
        lines += ["", f"EOT sufficiency: not checked ({e['skipped']})."]
    return lines


def minimum_norm(a) -> bool:
    """Is this a minimum-norm attack (whose out-of-budget points are dropped)?"""
    return bool(getattr(a, "minimum_norm", False) or a.extra.get("minimum_norm") or a.dropped)


def ran_on_nothing(a) -> bool:
    """Did this attack run on no point at all (cascade: every point broken before it)?"""
    return a.attempted == 0 and a.independent_accuracy is None


def per_class(report) -> list[dict]:
    """Clean and robust (worst-case) accuracy per true class, from the per-sample results."""
    names = list(report.meta.get("dataset", {}).get("classes") or [])
    by: dict[int, list] = {}
    for s, c, r in zip(report.samples, scores(report, "clean"), scores(report, "robust")):
        row = by.setdefault(int(s["label"]), [0, 0, 0])
        row[0] += 1
        row[1] += c
        row[2] += r
    return [
        {"class": c, "name": names[c] if c < len(names) else str(c), "n": n, "clean_correct": cc, "robust": rb,
         "clean_accuracy": cc / n, "robust_accuracy": rb / n}
        for c, (n, cc, rb) in sorted(by.items())
    ]


def _attack_table(report) -> list[str]:
    n = report.n
    indep = any(a.independent_accuracy is not None for a in report.attacks)
    minnorm = any(minimum_norm(a) for a in report.attacks)
    head = ["attack", "implementation", "attempted", "broken"] + (["dropped"] if minnorm else [])
    head += ["accuracy after (%)", "95 % CI (%)"] + (["alone (%)"] if indep else []) + ["passes / point", "time (s)"]

    def row(cells: dict) -> str:
        return "| " + " | ".join(str(cells.get(h, "")) for h in head) + " |"

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append(row({"attack": "clean", "attempted": n,
                      "accuracy after (%)": _pct(report.clean_accuracy), "95 % CI (%)": _span(interval(report, "clean"))}))
    for a in report.attacks:
        none = ran_on_nothing(a)
        cells = {"attack": a.name, "implementation": a.implementation, "attempted": a.attempted, "broken": a.broken,
                 "dropped": a.dropped if minimum_norm(a) else "",
                 "accuracy after (%)": NO_POINTS if a.attempted == 0 else _pct(a.accuracy),
                 "95 % CI (%)": "" if a.attempted == 0 else _span(attack_interval(report, a)),
                 "alone (%)": _pct(a.independent_accuracy), "time (s)": "n/a" if none else f"{a.seconds:.1f}",
                 "passes / point": "n/a" if none else per_point(a)}
        lines.append(row(cells))
    if report.attacks or any(r["applied"] for r in getattr(report, "adaptive_attacks", None) or []):
        lines.append(row({"attack": "**worst case**", "accuracy after (%)": f"**{_pct(report.robust_accuracy)}**",
                          "95 % CI (%)": _span(interval(report, "robust"))}))
    return lines


def attack_interval(report, a) -> tuple[float, float] | None:
    """95 % interval of the accuracy after attack ``a``: Wilson's, or for a random model the interval of the
    mean of the points' scores after it (kept by the cascade)."""
    if a.accuracy is None:
        return None
    if getattr(report, "draws", 1) > 1:
        return a.score_interval
    return wilson(round(a.accuracy * report.n), report.n)


def per_point(a) -> str:
    """``"1,093 + 380"``: forward + backward images through the model per attempted point, as counted."""
    p = getattr(a, "passes_per_point", None) or {}
    if not p:
        return ""
    return f"{p.get('forward', 0):,.0f} + {p.get('backward', 0):,.0f}"


def _notes(report) -> list[str]:
    if not report.attacks:
        adapted = any(r["applied"] for r in getattr(report, "adaptive_attacks", None) or [])
        return ["", "No attack of the suite ran (attacks none)" + (": the worst case is the adaptive attacks' alone "
                "(below)" if adapted else ": clean accuracy only") + "; 95 % CI: Wilson score interval."]
    indep = any(a.independent_accuracy is not None for a in report.attacks)
    mode = ("each attack on every clean-correct point, worst case over all" if indep
            else "each attack on the points earlier attacks failed on")
    broken, ci = (("those it misclassified", "Wilson score interval over all points") if report.draws <= 1 else
                  ("those it misclassified on every draw", "over points and draws (see below)"))
    lines = ["", f"Mode: {mode}. Attempted: the points an attack ran on in the cascade; broken: {broken}; "
             f"95 % CI: {ci}. Passes / point: forward + backward passes of the model the attack spent per "
             "attempted point, counted where the model is called."]
    standard = [a.name for a in report.attacks if (a.extra or {}).get("autoattack_standard")]
    confirm = report.confirm or {}
    if standard:
        ran = "part of this run (" + ", ".join(standard) + ")"
    elif confirm.get("standard_autoattack"):
        ran = f"run by --confirm on {confirm.get('sampled', 'a sample of')} surviving points only (see Confirmation)"
    else:
        ran = "not run"
    lines.append(f"Standard AutoAttack: {ran}; the worst case is over "
                 f"{', '.join(a.name for a in report.attacks) or 'no attack'}.")
    if any(minimum_norm(a) for a in report.attacks):
        lines.append("Dropped: points where a minimum-norm attack found a perturbation larger than eps; "
                     "they count as not broken.")
    if any(a.attempted == 0 for a in report.attacks):
        why = ("no point was classified correctly" if report.clean_accuracy == 0
               else "earlier attacks had broken every point")
        lines.append(f"{NO_POINTS}: {why}, so this attack did not run.")
    return lines


def _per_class_table(report) -> list[str]:
    rows = per_class(report)
    if not rows:
        return []
    lines = ["", "## Per class", ""]
    if len(rows) > MAX_CLASSES_SHOWN:
        return lines + [f"{len(rows)} classes: see `per_class` in report.json."]
    lines += ["| class | n | clean (%) | robust (%) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['n']} | {_pct(r['clean_accuracy'])} | {_pct(r['robust_accuracy'])} |")
    return lines


def _normalization(norm: dict) -> str:
    """``mean (0.286) / std (0.353), from the dataset``: what the model does to its [0, 1] inputs."""
    if norm.get("source") == "none":
        return "none (the model takes [0, 1] images as they are)"

    def nums(v):
        return ", ".join(f"{float(t):.4g}" for t in v or [])

    return f"mean ({nums(norm.get('mean'))}) / std ({nums(norm.get('std'))}), from the {norm.get('source', '?')}"


def markdown(report, *, per_class_table: bool = True) -> str:
    """The result report; ``advkit eval`` prints it without the per-class table (long for many classes)."""
    m = report.meta
    lines = [
        f"# advkit eval: {m.get('model', '')} on {m.get('dataset', {}).get('name', '')} "
        f"({report.n} points, {report.threat}, seed {m.get('seed')})",
        "",
    ]
    info = m.get("model_info") or {}
    source = [f"{k} {info[k]}" for k in ("checkpoint", "weights") if info.get(k)]
    if source:
        lines += [f"Model loaded from: {'; '.join(source)}.", ""]
    norm = info.get("normalization")
    if norm:
        lines += [f"Normalization inside the model: {_normalization(norm)}.", ""]
    notes = list(m.get("adaptive") or []) + list(m.get("notes") or [])
    if m.get("resumed_batches"):
        notes.append(f"resumed: {m['resumed_batches']} batches were read back from an earlier run in this directory")
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    lines += _attack_table(report) + _notes(report) + _random_lines(report) + (_per_class_table(report) if per_class_table else [])
    if report.sweep:
        names = list(report.sweep[0]["attacks"])
        lines += ["", "## Robust accuracy (%) vs eps", "", "| eps | " + " | ".join(names) + " | worst case |", "|---" * (len(names) + 2) + "|"]
        for row in report.sweep:
            lines.append(f"| {row['eps_label']} | " + " | ".join(_pct(row["attacks"][k]) for k in names) + f" | {_pct(row['worst_case'])} |")
    lines += _confirm_lines(report)
    lines += _audit_lines(report) + _adaptive_lines(report)
    return "\n".join(lines) + "\n"


def _audit_lines(report) -> list[str]:
    """The audit table: one line per check, what it saw, and for a flag what it means (docs/audit.md)."""
    if not report.audit:
        return []
    lines = ["", "## Audit", "", "| check | result | what was seen | passes spent / announced | see |",
             "|---|---|---|---|---|"]
    for c in report.audit:
        result = "n/a" if not c.get("applies", True) else "pass" if c["passed"] else "**FLAGGED**"
        why = f" {c['suggests']}" if c.get("suggests") else ""
        lines.append(f"| {c['check']} | {result} | {c['detail']}.{why} | {_spent(c.get('passes'))} | "
                     f"docs/audit.md#{c.get('doc', c['check'])} |")
    flagged = [c["check"] for c in report.audit if not c["passed"]]
    lines += ["", f"Flagged: {', '.join(flagged)}." if flagged else "No check flagged this evaluation."]
    return lines


def _spent(passes: dict | None) -> str:
    """A check's passes (forward + backward images) against the most it announced."""
    if not passes:
        return ""
    spent, announced = (sum(passes[k].get(kind, 0) for kind in ("forward", "backward")) for k in ("spent", "announced"))
    return f"{spent:,.0f} / {announced:,.0f}"


def _adaptive_lines(report) -> list[str]:
    """What --adaptive applied, with the robust accuracy before and after each remedy."""
    rows = getattr(report, "adaptive_attacks", None)
    if rows is None:
        return []
    lines = ["", "## Adaptive attacks", ""]
    if not rows:
        return lines + ["No flagged check names a remedy: nothing to apply."]
    lines += ["| remedy | applied | attack | points | robust accuracy before (%) | after (%) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if not r["applied"]:
            lines.append(f"| {r['remedy']} | no: {r['why']} | | | | |")
            continue
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "its defaults"
        runs = f" x{r['runs']}" if r["runs"] > 1 else ""
        lines.append(f"| {r['remedy']} | yes | {r['attack']} ({params}){runs} | {r['points']} | "
                     f"{_pct(r['accuracy_before'])} | {_pct(r['accuracy_after'])} |")
    return lines + ["", "The worst case above includes the adaptive attacks (broken_by `adaptive:REMEDY` in results.csv)."]


def _confirm_lines(report) -> list[str]:
    c = report.confirm
    if not c:
        return []
    lo, hi = c["ci95"]
    standard = "standard AutoAttack" if c.get("standard_autoattack") else c["implementation"]
    return ["", "## Confirmation", "",
            f"{c['attack']} ({standard}) ran on a seeded random sample of {c['sampled']} of the {c['survivors']} points "
            f"the attacks above left unbroken and broke {c['broken']}: the robust accuracy above is estimated to "
            f"overstate {c['attack']}'s by {100 * c['gap']:.2f} points (95 % CI {100 * lo:.2f} to {100 * hi:.2f}), "
            f"i.e. about {_pct(report.robust_accuracy - c['gap'])} %. The worst case above is the listed attacks' own"
            + ("." if not c.get("standard_autoattack") else ", not standard AutoAttack's.")]


def as_json(report) -> dict:
    """``report.as_dict()`` with the intervals and the per-class accuracies added."""
    d = report.as_dict()
    d["clean_accuracy_ci95"] = interval(report, "clean")
    d["robust_accuracy_ci95"] = interval(report, "robust")
    if report.draws > 1:
        d["draw_standard_error"] = {"clean": draw_error(report, "clean"), "robust": draw_error(report, "robust")}
    attacks = []
    for a, entry in zip(report.attacks, d["attacks"]):
        entry = dict(entry)  # as_dict shares the dataclasses' own dicts
        entry.pop("score_interval", None)  # given as accuracy_ci95
        entry["accuracy_ci95"] = None if a.attempted == 0 else attack_interval(report, a)
        entry["ran"] = not ran_on_nothing(a)
        attacks.append(entry)
    d["attacks"] = attacks
    d["per_class"] = per_class(report)
    return d


def write_csv(report, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    random = report.draws > 1  # clean_correct and robust: shares of correct draws
    w.writerow(["index", "label", "clean_pred", "clean_correct", "robust", "broken_by", "perturbation_norm"])
    for s, c, r in zip(report.samples, scores(report, "clean"), scores(report, "robust")):
        cells = [f"{c:.4g}", f"{r:.4g}"] if random else [int(c), int(r)]
        w.writerow([s["index"], s["label"], s["clean_pred"], *cells, s["broken_by"],
                    "" if s["norm"] is None else f"{s['norm']:.6g}"])
    atomic_write_bytes(path, buf.getvalue().encode())


def write_attacks_csv(report, path: Path) -> None:
    """One row per attack: its outcome, its seconds and the passes it spent (counted), also per point."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["attack", "implementation", "attempted", "broken", "accuracy_after", "seconds", "forward_passes",
                "backward_passes", "forward_per_point", "backward_per_point"])
    for a in report.attacks:
        p, pp = a.passes or {}, a.passes_per_point or {}
        w.writerow([a.name, a.implementation, a.attempted, a.broken, "" if a.accuracy is None else f"{a.accuracy:.6g}",
                    f"{a.seconds:.3f}", p.get("forward", 0), p.get("backward", 0), pp.get("forward", 0),
                    pp.get("backward", 0)])
    atomic_write_bytes(path, buf.getvalue().encode())


def write_reports(report, out: Path) -> list[str]:
    """Write the reports into ``out``; return the names of the files written."""
    from advkit._internal.evaluation.figures import plot_curve, plot_per_class

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", as_json(report))
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    write_csv(report, out / "results.csv")
    write_attacks_csv(report, out / "attacks.csv")
    written = ["report.json", "report.md", "results.csv", "attacks.csv"]
    if report.samples and len(per_class(report)) <= MAX_CLASSES_SHOWN:
        plot_per_class(report, out / "per_class.png")
        written.append("per_class.png")
    if report.sweep:
        plot_curve(report, out / "robustness_curve.png")
        written.append("robustness_curve.png")
    return written
