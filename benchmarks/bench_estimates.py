"""How well advkit's cost estimates plan a run: the announced range and the live estimate against the actual time.

Each run below is one ``advkit eval --out DIR`` (bundled standard and adversarially
trained models, cascades and single attacks, a resumed and a finished run). From its
report.json (``cost``):

- *inside*: the time the attacks took after the announcement lies in the announced range;
- *live at 10 %*: the estimate of the time left shown once 10 % of the attacks' time had
  passed, against the time that was actually left (runs shorter than 20 s have no such
  estimate worth the name: the bar updates every quarter second, the log every two).

Goals: inside in at least 9 of 10 runs; the live estimate within +-30 %.

    python benchmarks/bench_estimates.py [--out runs/bench_estimates] [--markdown] [--no-docs]

writes the table between ``<!-- bench_estimates:begin -->`` and ``<!-- bench_estimates:end -->`` in
docs/benchmarks.md.

Run on an idle machine; one thread per run (``OMP_NUM_THREADS=1``), one run at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
AT = ["-m", "smallcnn-fmnist-at"]
RUNS = {  # name -> advkit eval arguments (besides --out)
    "readme: default model, pgd,cw,aa, 500 points": [],
    "standard, pgd,fgsm,square --independent, 30": ["-a", "pgd,fgsm,square", "--independent", "-n", "30"],
    "standard, pgd:steps=500, 30": ["-a", "pgd:steps=500", "-n", "30"],
    "AT, pgd,cw,aa, 60": [*AT, "-n", "60"],
    "AT, aa, 40": [*AT, "-a", "aa", "-n", "40"],
    "AT, fast, 300": [*AT, "-a", "fast", "-n", "300"],
    "AT, pgd:steps=50,cw, 500": [*AT, "-a", "pgd:steps=50,cw", "-n", "500"],
    "AT, square, 100": [*AT, "-a", "square", "-n", "100"],
    "AT, apgd-ce,apgd-t, 200, resumed after its first batch": [*AT, "-a", "apgd-ce,apgd-t", "-n", "200",
                                                               "--batch-size", "50"],
    "AT, pgd,fast, 300, finished run re-run": [*AT, "-a", "pgd,fast", "-n", "300"],
}
RESUMED, FINISHED = "resumed after its first batch", "finished run re-run"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def advkit(args: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "advkit", "--seed", "0", "eval", *args, "--out", str(out)],
                       capture_output=True, text=True, env=ENV)
    if r.returncode:
        raise SystemExit(f"advkit eval {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def keep_first_batch(out: Path) -> None:
    """What an interruption after the first attack batch leaves: the clean records and one attack batch."""
    lines = (out / "progress.jsonl").read_text().splitlines()
    kept, attack_batches = [], 0
    for line in lines:
        rec = json.loads(line)
        if rec["stage"] != "clean":
            attack_batches += 1
            if attack_batches > 1:
                continue
        kept.append(line)
    (out / "progress.jsonl").write_text("\n".join(kept) + "\n")
    for name in ("report.json", "report.md", "results.csv", "attacks.csv"):
        (out / name).unlink(missing_ok=True)


def measure(k: int, name: str, args: list[str], root: Path) -> dict:
    out = root / f"run{k}"
    if out.exists():
        shutil.rmtree(out)
    if RESUMED in name:
        advkit(args, out)
        keep_first_batch(out)
    elif FINISHED in name:
        advkit(args, out)
    wall = advkit(args, out)
    cost = json.loads((out / "report.json").read_text()).get("cost") or {}
    return {"name": name, "command": "advkit --seed 0 eval " + " ".join(args), "wall_s": round(wall, 1), **judge(cost)}


def judge(cost: dict) -> dict:
    """Inside the range? And the live estimate once 10 % of the attacks' time had passed."""
    total, at = cost.get("elapsed_s") or 0.0, cost.get("announced_at_s")
    announced = cost.get("announced_s")
    actual = total - (at or 0.0)
    row = {"announced_s": announced, "actual_s": round(actual, 1), "elapsed_s": total}
    if announced is None:  # nothing left to run: nothing was announced, nothing took time
        row["inside"] = actual < 5.0
    else:
        row["inside"] = announced[0] <= actual <= announced[1]
    later = [(t, eta) for t, eta in cost.get("trace") or [] if t >= 0.1 * total]
    if total >= 20 and later:
        t, eta = later[0]
        left = total - t
        row["live_at_10pct"] = {"at_s": t, "estimate_s": eta, "actual_left_s": round(left, 1),
                                "error": round((eta - left) / left, 3) if left > 0 else None}
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| run | announced (s) | actual (s) | inside | live estimate at 10 % (s) | actually left (s) | error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r.get("announced_s")
        ann = "nothing (all on disk)" if a is None else f"{a[0]:.0f} to {a[1]:.0f}"
        live = r.get("live_at_10pct")
        cells = [f"{live['estimate_s']:.0f}", f"{live['actual_left_s']:.0f}", f"{100 * live['error']:+.0f} %"] \
            if live else ["n/a (under 20 s)", "", ""]
        lines.append(f"| {r['name']} | {ann} | {r['actual_s']:.1f} | {'yes' if r['inside'] else '**no**'} | "
                     + " | ".join(cells) + " |")
    inside = sum(r["inside"] for r in rows)
    lives = [r["live_at_10pct"]["error"] for r in rows if r.get("live_at_10pct")]
    good = sum(abs(e) <= 0.3 for e in lives)
    lines += ["", f"Inside the announced range: {inside} of {len(rows)} (goal: at least 9 of 10). "
                  f"Live estimate at 10 % within +-30 %: {good} of {len(lives)}."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_estimates")
    p.add_argument("--runs", default="", help="comma-separated substrings of run names (default: all)")
    p.add_argument("--markdown", action="store_true", help="print the table of the last results only")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    a = p.parse_args()
    root = Path(a.out)
    results = root / "results.json"
    if a.markdown:
        print(markdown(json.loads(results.read_text())))
        return
    chosen = [n for n in RUNS if not a.runs or any(k in n for k in a.runs.split(","))]
    rows = []
    for name in chosen:
        rows.append(measure(list(RUNS).index(name), name, RUNS[name], root))
        print(json.dumps(rows[-1]), flush=True)
    root.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    print(table)
    if not a.no_docs and not a.runs:
        write_section(DOCS, "bench_estimates", table)


if __name__ == "__main__":
    main()
