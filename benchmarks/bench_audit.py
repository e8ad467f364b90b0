"""The audit against a zoo of broken defenses (benchmarks/zoo.py): is each one flagged, and does
``--adaptive`` break it?

For each zoo entry (trained when missing, see zoo.py): ``advkit.evaluate`` with AutoAttack
(``aa``; advkit picks ``aa-rand`` for a random model), ``--audit`` (every registered check, its default
100-point sample) and ``--adaptive`` (the remedies of the flags; the entry's BPDA surrogate as
``--surrogate`` where it has one), on the first ``--n`` test points at Linf eps 0.1. The table: plain
``aa`` accuracy, the flags raised, the accuracy after ``--adaptive``, and the target (the undefended
model's accuracy, or the PGD-AT row's for the stochastic rows). The goals (issue: every broken defense
flagged, ``--adaptive`` within 5 points of the target, no flag on the sound rows) are checked and printed.
Each row's result is kept in ``OUT/NAME/audit.json`` (reused; ``--redo`` reruns). Writes the table between
``<!-- bench_audit:begin -->`` and ``<!-- bench_audit:end -->`` in docs/audit.md.

    python benchmarks/bench_audit.py [--rows quantize,jpeg] [--out runs/zoo] [--n 100] [--no-docs]
    python benchmarks/bench_audit.py --build-only --rows thermometer,kwta   # only train
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402
from _docs import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "audit.md"
TOLERANCE = 0.05


def evaluate_row(name: str, out: Path, n: int) -> dict:
    import advkit

    model, surrogate = zoo.build(name, out)
    data = advkit.load_dataset("fmnist-mini", split="test", n=n)
    earlier = logged_seconds(out / name / "eval")  # batches an interrupted run finished: resumed, not redone
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # masked models make AutoAttack warn; the audit reports it
        r = advkit.evaluate(model, data, ["aa"], eps="0.1", audit="all", adaptive=True, surrogate=surrogate,
                            out=str(out / name / "eval"), quiet=True, meta={"model": f"zoo:{name}"})
    plain = next(a for a in r.attacks if a.name.startswith("aa"))
    return {
        "name": name, "n": r.n, "clean": r.clean_accuracy, "attack": plain.name, "plain": plain.accuracy,
        "flags": [c["check"] for c in r.audit if not c["passed"] and c.get("applies", True)],
        "adaptive": r.robust_accuracy, "remedies": [a["remedy"] for a in r.adaptive_attacks or [] if a["applied"]],
        "not_applied": {a["remedy"]: a["why"] for a in r.adaptive_attacks or [] if not a["applied"]},
        "draws": r.draws, "seconds": round(time.time() - t0 + earlier, 1), "where": where(),
    }


def where() -> str:
    """The machine a row ran on, as the table's footnote names it: rows from different devices are not
    bit-comparable (a GPU is not bit-deterministic, and its library versions may differ)."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def logged_seconds(run: Path) -> float:
    """Seconds of the batches already in the run's progress log (what a resumed run does not spend again)."""
    path = run / "progress.jsonl"
    if not path.exists():
        return 0.0
    total = 0.0
    for line in path.read_text().splitlines():
        try:
            total += float(json.loads(line).get("seconds", 0.0))
        except (json.JSONDecodeError, TypeError, ValueError):
            continue
    return total


def running(claim) -> bool:
    """Whether the process that claimed a row (its pid in ``pending``) is still at it."""
    if isinstance(claim, bool) or not isinstance(claim, int) or claim == os.getpid():
        return False
    try:
        os.kill(claim, 0)
    except OSError:
        return False
    return True


def row(name: str, out: Path, n: int, redo: bool) -> dict | None:
    """The row's result: kept from an earlier run, or evaluated now (None: another process is evaluating it)."""
    path = out / name / "audit.json"
    if path.exists() and not redo:
        done = json.loads(path.read_text())
        if running(done.get("pending")):
            return None
        if not done.get("pending"):
            return done
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "pending": os.getpid(), "n": 0, "clean": 0, "attack": "", "plain": 0,
                                "flags": [], "adaptive": 0, "remedies": [], "not_applied": {}, "draws": 1}))
    res = evaluate_row(name, out, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"{name}: {res}", flush=True)
    return res


def target(entry, results: dict) -> float | None:
    ref = {"broken": "undefended", "stochastic": "pgd-at"}.get(entry.kind)
    return results[ref]["adaptive"] if ref in results else None


def goals(results: dict) -> list[str]:
    """One line per goal of the issue: met, or the shortfall."""
    lines = []
    broken = [e for e in zoo.ENTRIES if e.kind == "broken" and e.name in results]
    unflagged = [e.name for e in broken if not results[e.name]["flags"]]
    lines.append(f"- Every broken defense flagged: {len(broken) - len(unflagged)} of {len(broken)}"
                 + (f" (not flagged: {', '.join(unflagged)})" if unflagged else ""))
    far = []
    for e in broken:
        t = target(e, results)
        if t is not None and results[e.name]["adaptive"] - t > TOLERANCE:
            far.append(f"{e.name} {100 * (results[e.name]['adaptive'] - t):+.1f}")
    lines.append(f"- `--adaptive` at most {100 * TOLERANCE:.0f} points above the target: {len(broken) - len(far)} of "
                 f"{len(broken)}" + (f" (beyond: {', '.join(far)} points)" if far else ""))
    sound = [e.name for e in zoo.ENTRIES if e.kind == "sound" and e.name in results]
    noisy = [s for s in sound if results[s]["flags"]]
    lines.append(f"- No flag on the sound adversarially trained rows: {len(sound) - len(noisy)} of {len(sound)}"
                 + (f" (flagged: {', '.join(noisy)})" if noisy else ""))
    for e in (e for e in zoo.ENTRIES if e.kind == "stochastic" and e.name in results):
        r, t = results[e.name], target(e, results)
        lines.append(f"- {e.name} (stochastic, reported whichever way it goes): plain `{r['attack']}` "
                     f"{100 * r['plain']:.1f}, `--adaptive` {100 * r['adaptive']:.1f}"
                     + (f", {100 * (r['adaptive'] - t):+.1f} points from the target ({100 * t:.1f})" if t is not None else ""))
    missing = [e.name for e in zoo.ENTRIES if e.name not in results]
    if missing:
        lines.append(f"- Not measured yet: {', '.join(missing)}")
    machines: dict[str, list[str]] = {}
    for e in zoo.ENTRIES:
        if e.name in results:
            machines.setdefault(results[e.name].get("where", "not recorded"), []).append(e.name)
    if machines:
        lines.append("- Ran on: " + "; ".join(f"{m} ({'every row' if len(rows) == len(results) else ', '.join(rows)})"
                                               for m, rows in machines.items()))
    return lines


def markdown(results: dict, n: int) -> str:
    head = ["| model | kind | clean | plain `aa` | flags raised | `--adaptive` (remedies) | target | minutes |",
            "|---|---|---|---|---|---|---|---|"]
    rows = []
    for e in zoo.ENTRIES:
        r = results.get(e.name)
        if r is None:
            continue
        t = target(e, results)
        flags = ", ".join(f"[{f}](#{f})" for f in r["flags"]) or "none"
        rem = ", ".join(r["remedies"]) or "none"
        rows.append(f"| {e.name} ({e.what}) | {e.kind} | {100 * r['clean']:.1f} | {100 * r['plain']:.1f} "
                    f"(`{r['attack']}`) | {flags} | {100 * r['adaptive']:.1f} ({rem}) | "
                    + (f"{100 * t:.1f}: {e.literature}" if t is not None else "")
                    + (f" | {r['seconds'] / 60:.0f} |" if r.get("seconds") else " | |"))
    return "\n".join(head + rows + ["", *goals(results), ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(e.name for e in zoo.ENTRIES))
    ap.add_argument("--out", default="runs/zoo")
    ap.add_argument("--n", type=int, default=100, help="test points evaluated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--no-docs", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    names = [s for s in a.rows.split(",") if s]
    if a.build_only:
        for name in names:
            zoo.build(name, out)
        return
    results = {name: r for name in names if (r := row(name, out, a.n, a.redo)) is not None}
    done = {e.name: json.loads((out / e.name / "audit.json").read_text()) for e in zoo.ENTRIES
            if (out / e.name / "audit.json").exists()}
    done = {k: v for k, v in done.items() if not v.get("pending")}
    text = markdown({**done, **results}, a.n)
    print(text)
    if not a.no_docs:
        write_section(DOCS, "bench_audit", text)


if __name__ == "__main__":
    main()
