"""The tables of ``defense_table.py``, read from the run folders it leaves (one per training seed).

Every function takes the run folders (``runs/table``, ``runs/table-seed1``, ...), the row
names and the function that labels a row. A row finished in only some folders (a rerun still
in progress) shows the seeds it has, marks the others "not run", and its means and notes say
which seeds they cover. Per point a deterministic model scores 0 or 1, a random one the share
of its draws that stayed correct.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable

Label = Callable[[str], str]


def report(folder: Path, name: str) -> dict | None:
    rep = Path(folder) / name / "eval" / "report.json"
    return json.loads(rep.read_text()) if rep.exists() and (rep.parent / "results.csv").exists() else None


def finished(folders: list[Path], names: list[str]) -> list[str]:
    return [n for n in names if all(report(f, n) is not None for f in folders)]


def started(folders: list[Path], names: list[str]) -> list[str]:
    """The rows finished in at least one folder."""
    return [n for n in names if any(report(f, n) is not None for f in folders)]


def _seed_note(folders: list[Path], done: list[bool]) -> str:
    """'' when every folder has the row, else which run folders are still missing it."""
    missing = [f.name for f, d in zip(folders, done) if not d]
    return f"not run yet in {', '.join(missing)}" if missing else ""


def per_point(folder: Path, name: str) -> dict[int, tuple[float, float, float]]:
    """index -> (clean, after the first attack, after every attack) of a finished row (the first attack's score
    of a random model from its stage in progress.jsonl, since results.csv keeps only the worst case)."""
    ev = Path(folder) / name / "eval"
    rep = json.loads((ev / "report.json").read_text())
    first = rep["attacks"][0]["name"]
    with (ev / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    clean = {int(r["index"]): float(r["clean_correct"]) for r in rows}
    if any(0 < v < 1 for v in clean.values()) or rep.get("draws", 1) > 1:
        after = dict(clean)
        for line in (ev / "progress.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["stage"] == f"cascade:0:{first}":
                after.update({i: min(clean[i], float(v)) for i, v in zip(rec["index"], rec["score"])})
        return {int(r["index"]): (clean[int(r["index"])], after[int(r["index"])], float(r["robust"])) for r in rows}
    return {int(r["index"]): (clean[int(r["index"])], float(clean[int(r["index"])] and r["broken_by"] != first),
                              float(r["robust"])) for r in rows}


def _accuracies(rep: dict) -> tuple[float, float, float]:
    pgd = next((x["accuracy"] for x in rep["attacks"] if x["name"] == "pgd"), float("nan"))
    return rep["clean_accuracy"], pgd, rep["robust_accuracy"]


def main_table(folder: Path, names: list[str], label: Label) -> str:
    """One run folder: accuracies on every evaluated point, the AutoAttack version, the draws of random rows."""
    lines = ["| defenses | test points | clean | PGD-20 | PGD-20 then AutoAttack (worst case) | AutoAttack attacks | notes |",
             "|---|---|---|---|---|---|---|"]
    for name in finished([folder], names):
        r = report(folder, name)
        aa = next((x for x in r["attacks"] if x["name"].startswith("aa")), None)
        attacks = aa["implementation"].rsplit("(", 1)[-1].rstrip(")").split(", ", 1)[-1] if aa else ""
        note = f"stochastic: EOT-20 PGD, aa-rand, {r.get('draws', 1)} draws per point" if r.get("stochastic") else ""
        cells = " | ".join(f"{100 * v:.1f}" for v in _accuracies(r))
        lines.append(f"| {label(name)} | {r['n']} | {cells} | {attacks} | {note} |")
    return "\n".join(lines)


def seeds_table(folders: list[Path], names: list[str], label: Label) -> str:
    """Per row: clean, PGD-20 and worst case under each training seed, and their mean when it has every seed."""
    lines = [f"| defenses | test points | {len(folders)} training seeds: clean | PGD-20 | worst case | notes |",
             "|---|---|---|---|---|---|"]
    for name in started(folders, names):
        reps = [report(f, name) for f in folders]
        runs = [_accuracies(r) if r else None for r in reps]
        have = [v for v in runs if v]
        mean = len(folders) > 1 and len(have) == len(runs)  # a mean over some seeds would pass for one over all
        cells = [" / ".join(f"{100 * v[k]:.1f}" if v else "not run" for v in runs)
                 + (f" (mean {100 * sum(v[k] for v in have) / len(have):.1f})" if mean else "") for k in range(3)]
        first = next(r for r in reps if r)
        notes = [f"stochastic: EOT-20 PGD, aa-rand, {first.get('draws', 1)} draws per point"
                 if first.get("stochastic") else "", _seed_note(folders, [bool(r) for r in reps])]
        lines.append(f"| {label(name)} | {first['n']} | " + " | ".join(cells) + f" | {'; '.join(x for x in notes if x)} |")
    return "\n".join(lines)


def subset_table(folders: list[Path], names: list[str], label: Label, k: int) -> str:
    """Every row on its first ``k`` test points (the random rows' points): per training seed, and their mean when
    the row has every seed."""
    many = len(folders) > 1
    lines = [f"| defenses (first {k} test points{', per training seed (mean)' if many else ''}) "
             "| clean | PGD-20 | worst case |", "|---|---|---|---|"]
    for name in started(folders, names):
        done = [report(f, name) is not None for f in folders]
        scores = [per_point(f, name) if d else None for f, d in zip(folders, done)]
        if any(s is not None and len(s) < k for s in scores):
            continue
        acc = [[sum(s[i][c] for i in sorted(s)[:k]) / k for c in range(3)] if s else None for s in scores]
        have = [a for a in acc if a]
        cells = [" / ".join(f"{100 * a[c]:.1f}" if a else "not run" for a in acc)
                 + (f" ({100 * sum(a[c] for a in have) / len(have):.1f})" if many and all(done) else "")
                 for c in range(3)]
        notes = ["EOT-20 PGD, aa-rand" if report(folders[done.index(True)], name).get("stochastic") else "",
                 _seed_note(folders, done)]
        note = "; ".join(x for x in notes if x)
        lines.append(f"| {label(name)}{f' ({note})' if note else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(folder: Path, row: str, base: str) -> tuple[int, list[tuple[float, float]]]:
    """ROW - BASE on the points both evaluated: (points, [(mean difference, paired standard error)] for clean,
    PGD-20 and the worst case); the paired error is the sd of the per-point difference over sqrt(points)."""
    x, y = per_point(folder, row), per_point(folder, base)
    common = sorted(set(x) & set(y))
    out = []
    for k in range(3):
        d = [x[i][k] - y[i][k] for i in common]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((v - mean) ** 2 for v in d) / max(len(d) - 1, 1))
        out.append((mean, sd / math.sqrt(len(d))))
    return len(common), out


def paired_table(folders: list[Path], pairs: list[tuple[str, str]], label: Label) -> str:
    """ROW - BASE per training seed, ± its paired standard error, and their mean when every seed finished both.
    The paired error is the test-set noise of one seed's comparison; the seeds' spread is the training noise,
    which it leaves out."""
    many = len(folders) > 1
    head = "| row | versus | points | clean | PGD-20 | worst case |"
    lines = [head.replace("| clean", "| clean, per seed (mean)") if many else head, "|---|---|---|---|---|---|"]
    for row, base in pairs:
        done = [len(finished([f], [row, base])) == 2 for f in folders]
        if not any(done):
            continue
        per_seed = [paired(f, row, base) if d else None for f, d in zip(folders, done)]
        have = [d for d in per_seed if d]
        cells = []
        for k in range(3):
            each = " / ".join(f"{100 * d[1][k][0]:+.1f} ± {100 * d[1][k][1]:.1f}" if d else "not run" for d in per_seed)
            mean = sum(d[1][k][0] for d in have) / len(have)
            cells.append(f"{each} ({100 * mean:+.1f})" if many and len(have) == len(folders) else each)
        note = _seed_note(folders, done)
        lines.append(f"| {label(row)}{f' ({note})' if note else ''} | {label(base)} | {have[0][0]} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
