"""The CPU-scale defense table: train the SmallCNN with each defense on fmnist-mini, then evaluate it.

Every row is two ``advkit`` commands (printed, and stored with the results):
``advkit train`` with the row's defenses, then ``advkit eval`` of its last
checkpoint with PGD-20 and AutoAttack. Deterministic models get AutoAttack's
two APGD attacks (``aa:attacks=apgd-ce+apgd-t``; ``--full-aa`` adds FAB-T and
Square, which cost minutes per model on a CPU); stochastic ones get
``aa-rand`` (APGD-CE and APGD-DLR with EOT), which advkit picks by itself. Rows already trained or evaluated
in ``--out`` are not redone, so the script can be stopped and restarted.

    python benchmarks/defense_table.py                       # every row, 2 jobs at a time
    python benchmarks/defense_table.py --rows pgd-at,part --jobs 1
    python benchmarks/defense_table.py --markdown             # print the table of what is done

The result goes to ``OUT/table.md`` (also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

AT = "pgd-at:steps={steps},step_size={step}"
ROWS = {  # name -> defenses (the training adversary: {steps} PGD steps of {step}); cheapest to evaluate first
    "standard": [],
    "pgd-at": [AT],
    "trades": ["trades:steps={steps},step_size={step}"],
    "part": [AT, "part"],
    "part-t": ["trades:steps={steps},step_size={step}", "part"],
    "mart": ["mart:steps={steps},step_size={step}"],
    "mixed": ["mixed:clean=0.5,fgsm=0.25,pgd=0.25"],
    "noise-injection+pgd-at": [AT, "noise-injection"],
    "lwta+pgd-at": [AT, "lwta"],
}
STOCHASTIC = {"lwta", "noise-injection"}  # evaluated with aa-rand (APGD-CE + APGD-DLR with EOT) by advkit itself


def commands(name: str, a) -> tuple[list[str], list[str]]:
    run = Path(a.out) / name
    train = ["advkit", "--seed", str(a.seed), "-q", "train", "--model", "smallcnn", "--dataset", "fmnist-mini",
             "--n-train", str(a.n_train), "--epochs", str(a.epochs), "--batch-size", "128", "--optimizer", "adam",
             "--lr", "1e-3", "--weight-decay", "0", "--schedule", "cosine", "--eps", a.eps, "--n-val", "500",
             "--val-attack", "pgd", "--out", str(run)]
    for d in ROWS[name]:
        train += ["--defense", d.format(steps=a.steps, step=a.step_size)]
    stochastic = bool(STOCHASTIC & set(d.split(":")[0] for d in ROWS[name]))
    n = a.n_stochastic if stochastic and a.n_stochastic else a.n
    evaluate = ["advkit", "--seed", str(a.seed), "-q", "eval", "--model", str(run / "last.safetensors"),
                "--attacks", "pgd,aa", "--attack-opt", "pgd.steps=20", "--eps", a.eps, "-n", str(n),
                "--out", str(run / "eval")]
    if not a.full_aa and not stochastic:
        evaluate[-2:-2] = ["--attack-opt", "aa.attacks=apgd-ce+apgd-t"]
    return train, evaluate


def run_row(name: str, a) -> str:
    run = Path(a.out) / name
    train, evaluate = commands(name, a)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1"}
    trained = (run / "last.json").exists() and json.loads((run / "last.json").read_text()).get("epoch", 0) >= a.epochs
    if (run / "last.json").exists() and not trained:
        train = train + ["--resume"]
    steps = [] if trained else [("train", train)]
    if not (run / "eval" / "report.json").exists():
        steps.append(("eval", evaluate))
    for what, cmd in steps:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "advkit", *cmd[1:]], env=env, capture_output=True, text=True)
        (run / "logs").mkdir(parents=True, exist_ok=True)
        (run / "logs" / f"{what}.log").write_text(shlex.join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return f"{name}: {what} failed: {tail[0]}"
        (run / "logs" / f"{what}.seconds").write_text(f"{time.time() - t0:.0f}\n")
    return f"{name}: done"


def table(a) -> str:
    lines = ["| defenses | test points | clean | PGD-20 | PGD-20 then AutoAttack (worst case) | AutoAttack attacks | notes |",
             "|---|---|---|---|---|---|---|"]
    for name in a.rows:
        rep = Path(a.out) / name / "eval" / "report.json"
        if not rep.exists():
            continue
        r = json.loads(rep.read_text())
        acc = {x["name"]: x["accuracy"] for x in r["attacks"]}
        aa = next((x for x in r["attacks"] if x["name"].startswith("aa")), None)
        attacks = aa["implementation"].rsplit("(", 1)[-1].rstrip(")").split(", ", 1)[-1] if aa else ""
        note = "stochastic: EOT-20 PGD, aa-rand" if r.get("stochastic") else ""
        lines.append(
            f"| {' + '.join(d.split(':')[0] for d in ROWS[name]) or 'none (standard)'} | {r['n']} "
            f"| {100 * r['clean_accuracy']:.1f} | {100 * acc.get('pgd', float('nan')):.1f} | {100 * r['robust_accuracy']:.1f} "
            f"| {attacks} | {note} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    ap.add_argument("--out", default="runs/table")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--step-size", default="0.04", help="training PGD step (3 steps of 0.04 reach eps 0.1 from any start)")
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("-n", "--n", type=int, default=500, help="test points evaluated")
    ap.add_argument("--n-stochastic", type=int, default=200,
                    help="test points for stochastic models (EOT makes their attacks about 20x dearer); 0: as -n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per job")
    ap.add_argument("--full-aa", action="store_true",
                    help="standard AutoAttack (adds FAB-T and Square: minutes per model on CPU) instead of APGD-CE + APGD-T")
    ap.add_argument("--markdown", action="store_true", help="only print the table of finished rows")
    ap.add_argument("--print-commands", action="store_true")
    a = ap.parse_args(argv)
    a.rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = [r for r in a.rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if a.print_commands:
        for name in a.rows:
            for cmd in commands(name, a):
                print(shlex.join(cmd))
        return
    if not a.markdown:
        with ThreadPoolExecutor(a.jobs) as pool:
            for line in pool.map(lambda r: run_row(r, a), a.rows):
                print(line, flush=True)
    md = table(a)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
