"""``advkit train`` with its defaults trains the default model: clean test accuracy after 5 epochs.

Runs, with nothing but the epoch count and an output folder given,

    advkit --seed S -q train --epochs 5 --val-attack none --out OUT/seed-S
    advkit --seed S -q eval --model OUT/seed-S/last.safetensors --attacks none --out OUT/seed-S/eval

(the default architecture, data and optimisation settings: what the backbone declares it trains with),
for each seed, and writes the table between ``<!-- bench_train_defaults:begin -->`` and
``<!-- bench_train_defaults:end -->`` in docs/training.md. The goal: at least 85 % clean accuracy on the
whole fmnist-mini test split (2,000 images) after 5 epochs.

    python benchmarks/bench_train_defaults.py                  # seeds 0 and 1
    python benchmarks/bench_train_defaults.py --seeds 0 --no-docs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "training.md"
GOAL = 0.85


def advkit(*args: str) -> tuple[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "advkit", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"advkit {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r.stdout, time.time() - t0


def run(seed: int, out: Path) -> dict:
    folder = out / f"seed-{seed}"
    _, train_s = advkit("--seed", str(seed), "-q", "train", "--epochs", "5", "--val-attack", "none",
                        "--out", str(folder), "--overwrite")
    config = json.loads((folder / "config.json").read_text())
    _, eval_s = advkit("--seed", str(seed), "-q", "eval", "--model", str(folder / "last.safetensors"),
                       "--attacks", "none", "--out", str(folder / "eval"))
    report = json.loads((folder / "eval" / "report.json").read_text())
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "clean": report["clean_accuracy"], "n": report["n"], "train_s": round(train_s),
            "eval_s": round(eval_s), "recipe": {k: config[k] for k in ("optimizer", "lr", "weight_decay", "schedule",
                                                                         "batch_size")},
            "model": config["model"], "dataset": config["dataset"],
            "train_acc": [round(h["train_acc"], 4) for h in history]}


def markdown(rows: list[dict]) -> str:
    r0 = rows[0]["recipe"]
    recipe = ", ".join(f"{k} {v}" for k, v in r0.items())
    lines = [f"`advkit train --epochs 5 --val-attack none` and nothing else: `{rows[0]['model']}` on "
             f"`{rows[0]['dataset']}` (its 10,000 training images less the 500 held out for validation), with the "
             f"settings the backbone declares ({recipe}); then `advkit eval --attacks none` of `last.safetensors` "
             f"on the 2,000 test images. Goal: at least {100 * GOAL:.0f} %.", "",
             "| seed | clean test accuracy (%) | train accuracy per epoch (%) | train (s) | goal |",
             "|---|---|---|---|---|"]
    for r in rows:
        accs = " / ".join(f"{100 * a:.1f}" for a in r["train_acc"])
        lines.append(f"| {r['seed']} | {100 * r['clean']:.2f} | {accs} | {r['train_s']} | "
                     f"{'met' if r['clean'] >= GOAL else 'missed'} |")
    lines += ["", "Measured by `python benchmarks/bench_train_defaults.py` on 2 CPU cores shared with other jobs "
              "(the seconds are indicative only)."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", default="runs/bench_train_defaults")
    ap.add_argument("--no-docs", action="store_true")
    a = ap.parse_args(argv)
    rows = [run(int(s), Path(a.out)) for s in a.seeds.split(",")]
    (Path(a.out) / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = markdown(rows)
    print(text)
    if not a.no_docs:
        write_section(DOCS, "bench_train_defaults", text, heading="## Defaults that train")


if __name__ == "__main__":
    main()
