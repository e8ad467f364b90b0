"""Judging a random model: how far its reported accuracy moves with the evaluation seed, per number of draws.

Trains (once) a noise-injection + PGD-AT smallcnn on fmnist-mini, then evaluates it
under evaluation seeds 0-5:

- *one draw per batch*: the model called on the whole batch of points, so one weight
  draw decides every point (how a random model is judged when nobody takes care);
- ``advkit eval --draws R`` for R in 1, 5, 10, 20: every point its own draw, R of them.

For each: the clean accuracy per seed, its range and standard deviation, and the
95 % interval one run states; robust accuracy (PGD, EOT 20) the same for the default
R. The goal: the range over seeds smaller than the stated interval. Writes the table
between ``<!-- bench_draws:begin -->`` and ``<!-- bench_draws:end -->`` in docs/stochastic.md.

    python benchmarks/bench_draws.py [--out runs/bench_draws] [--n 200] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "stochastic.md"
SEEDS = range(6)
TRAIN = ["train", "--defense", "noise-injection", "--defense", "pgd-at", "--epochs", "3", "--n-train", "4000",
         "--val-attack", "none"]


def advkit(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "advkit", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"advkit {' '.join(args)} failed:\n{r.stderr[-2000:]}")


def per_batch(checkpoint: Path, n: int, seed: int) -> float:
    """Clean accuracy with one forward pass over all ``n`` points: one weight draw for all of them."""
    import advkit

    model = advkit.load_model(str(checkpoint))
    data = advkit.load_dataset("fmnist-mini", split="test", n=n)
    x, y = torch.stack([data[i][0] for i in range(n)]), torch.tensor([int(data[i][1]) for i in range(n)])
    torch.manual_seed(seed)
    with torch.inference_mode():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def run(out: Path, n: int, draws: int, seed: int, attacks: str) -> dict:
    folder = out / f"{attacks}-r{draws}-s{seed}"
    if not (folder / "report.json").exists():
        advkit("--seed", str(seed), "-q", "eval", "-m", str(out / "model" / "last.safetensors"), "-a", attacks,
               "-n", str(n), "--draws", str(draws), "--out", str(folder))
    return json.loads((folder / "report.json").read_text())


def row(label: str, values: list[float], interval=None) -> dict:
    return {"setting": label, "values": values, "range": max(values) - min(values), "sd": statistics.stdev(values),
            "interval": interval}


def measure(out: Path, n: int) -> list[dict]:
    if not (out / "model" / "last.safetensors").exists():
        advkit("--seed", "0", "-q", *TRAIN, "--out", str(out / "model"))
    rows = [row("clean, one draw per batch", [per_batch(out / "model" / "last.safetensors", n, s) for s in SEEDS])]
    for r in (1, 5, 10, 20):
        reps = [run(out, n, r, s, "none") for s in SEEDS]
        rows.append(row(f"clean, --draws {r}", [p["clean_accuracy"] for p in reps], reps[0]["clean_accuracy_ci95"]))
    reps = [run(out, n, 10, s, "pgd") for s in SEEDS]
    rows.append(row("robust (pgd, EOT 20), --draws 10", [p["robust_accuracy"] for p in reps],
                    reps[0]["robust_accuracy_ci95"]))
    rows[-1]["sufficiency"] = reps[0].get("eot_sufficiency")
    return rows


def markdown(rows: list[dict], n: int) -> str:
    lines = [f"Noise-injection + PGD-AT smallcnn (`{' '.join(TRAIN)}`), first {n} fmnist-mini test points, "
             f"evaluation seeds 0-5 (`python benchmarks/bench_draws.py`).", "",
             "| setting | accuracy per seed (%) | range (points) | SD (points) | 95 % interval one run states (%) "
             "| range inside its width? |", "|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["interval"]
        width = None if ci is None else ci[1] - ci[0]
        lines.append(f"| {r['setting']} | {', '.join(f'{100 * v:.1f}' for v in r['values'])} | {100 * r['range']:.1f} "
                     f"| {100 * r['sd']:.2f} | {'none stated' if ci is None else f'{100 * ci[0]:.1f} to {100 * ci[1]:.1f}'} "
                     f"| {'' if width is None else ('yes' if r['range'] < width else '**no**')} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_draws")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--no-docs", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = measure(out, a.n)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, a.n)
    print(table)
    if not a.no_docs:
        write_section(DOCS, "bench_draws", table)


if __name__ == "__main__":
    main()
