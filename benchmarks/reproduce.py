"""The source documents' tables at full scale: CIFAR-10 ResNet-18, one command per row.

Each row is an ``advkit train`` command and an ``advkit eval`` command (PGD-20,
then the standard AutoAttack; stochastic models get advkit's adaptive
evaluation by themselves). The recipe is the field's standard one for
CIFAR-10 ResNet-18 adversarial training, which the documents follow without
spelling it out: SGD with momentum 0.9, weight decay 5e-4, batch 128, learning
rate 0.1 divided by 10 at 50 % and 75 % of the epochs, crop-and-flip
augmentation, Linf eps 8/255 with a 10-step PGD of step 2/255 (TRADES and
MART: their own start and losses, beta 6 and 5); seed 004's row is L2 PGD-AT
at eps 0.5 (20 steps of 0.1) and is evaluated under L2.

    python benchmarks/reproduce.py --list                       # rows, their commands and GPU-hour estimates
    python benchmarks/reproduce.py pgd-at --data-dir ~/data     # run one row (train, then evaluate)
    python benchmarks/reproduce.py pgd-at --quick               # a minutes-long check of the same commands
    python benchmarks/reproduce.py --all --data-dir ~/data

Rows with CSA first build the bank of the standard model (``advkit csa-bank``)
from the ``standard`` row's checkpoint, so run ``standard`` first.

The GPU-hour column is an estimate, not a measurement: forward+backward
passes per row (PGD steps + 1 per training image per epoch, 550 PGD-10
equivalents per robust point for standard AutoAttack) divided by an assumed
ResNet-18 CIFAR throughput of ``--throughput`` passes/s (default 10,000 img/s
for forward+backward in bf16 on one H100-class GPU; fp32 is about half).
docs/benchmarks.md says which figures were measured on which card.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

AT = "pgd-at:steps=10,step_size=2/255"
TRADES = "trades:steps=10,step_size=2/255,beta=6"
MART = "mart:steps=10,step_size=2/255,beta=5"
CSA = "csa:bank={bank}"

# name -> (defenses, training threat "norm eps", source document and its reported clean / robust numbers)
ROWS: dict[str, tuple[list[str], str, str]] = {
    "standard": ([], "Linf 8/255", "the pretrained model CSA's bank is computed from"),
    "pgd-at": ([AT], "Linf 8/255", "seed 000: 84.49 / 46.38 / 44.06; seed 003: 82.58 / 43.69 / 41.63"),
    "pgd-at+csa": ([AT, CSA], "Linf 8/255", "seed 000: 82.91 / 49.42 / 46.56"),
    "trades": ([TRADES], "Linf 8/255", "seed 000: 81.71 / 51.08 / 47.74"),
    "trades+csa": ([TRADES, CSA], "Linf 8/255", "seed 000: 81.62 / 52.06 / 49.16"),
    "mart": ([MART], "Linf 8/255", "(PART-M's baseline)"),
    "part": ([AT, "part"], "Linf 8/255", "seed 003: 83.42 / 43.65 / 41.74"),
    "part-t": ([TRADES, "part"], "Linf 8/255", "seed 003: 79.36 / 48.90 / 45.97"),
    "part-m": ([MART, "part"], "Linf 8/255", "seed 003: 78.67 / 50.26 / 45.19"),
    "mixed": (["mixed:clean=0.5,fgsm=0.25,pgd=0.25"], "Linf 8/255", "seed 002 (no numbers at this scale)"),
    "noise-injection": ([AT, "noise-injection"], "Linf 8/255", "seed 001 (Rakin et al. 2018 recipe)"),
    "lwta": ([AT, "lwta"], "Linf 8/255", "seed 001 (Panousis et al. 2021 recipe)"),
    "l2-pgd-at": (["pgd-at:steps=20,step_size=0.1"], "L2 0.5", "seed 004: 85.0 clean / 64.6 L2 PGD at 0.5"),
}
STOCHASTIC = {"noise-injection", "lwta"}


def plan(a) -> dict:
    """Epochs, test points and attack budgets: the full recipe, or ``--quick`` for a minutes-long check."""
    if a.quick:
        return {"epochs": 1, "n_train": 2000, "n": 200, "bank": ["--per-class", "8"]}
    return {"epochs": a.epochs, "n_train": None, "n": 10000, "bank": []}


def commands(name: str, a) -> list[list[str]]:
    """The advkit commands of one row, in order."""
    defenses, threat, _ = ROWS[name]
    norm, eps = threat.split()
    p = plan(a)
    out = Path(a.out) / name
    base = ["advkit", "--seed", str(a.seed)]
    data = ["--dataset", "cifar10"] + (["--data-dir", a.data_dir] if a.data_dir else [])
    cmds = []
    bank = Path(a.out) / "csa-bank"
    if any(d.startswith("csa") for d in defenses):
        cmds.append(base + ["csa-bank", "--model", str(Path(a.out) / "standard" / "best.safetensors"), *data,
                            "--out", str(bank), *p["bank"]])
    train = base + ["train", "--model", "resnet18-cifar", *data, "--epochs", str(p["epochs"]), "--batch-size", "128",
                    "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4", "--schedule", "multistep",
                    "--norm", norm, "--eps", eps, "--out", str(out)]
    if p["n_train"]:
        train += ["--n-train", str(p["n_train"])]
    for d in defenses:
        train += ["--defense", d.format(bank=bank)]
    cmds.append(train)
    attacks = "pgd,aa" if norm == "Linf" else "pgd"
    cmds.append(base + ["eval", "--model", str(out / "best.safetensors"), *data, "--norm", norm, "--eps", eps,
                        "--attacks", attacks, "--attack-opt", "pgd.steps=20", "-n", str(p["n"]),
                        "--out", str(out / "eval")])
    return cmds


def passes(name: str, a) -> float:
    """Forward+backward passes of one row (train + eval), an estimate for the GPU-hour column."""
    defenses, threat, _ = ROWS[name]
    steps = 20 if threat.startswith("L2") else 10
    per_image = 1 + (steps if defenses else 0) + (1 if any(d.startswith(("trades", "mart")) for d in defenses) else 0)
    eot = 20 if STOCHASTIC & {d.split(":")[0] for d in defenses} else 1
    p = plan(a)
    train = (p["n_train"] or 50000) * p["epochs"] * per_image
    evaluation = p["n"] * (20 * eot + 550 * 10 * 0.5)  # PGD-20, then AutoAttack on about half the points
    bank = 10 * 150 * 64 * 129 / 3 if any(d.startswith("csa") for d in defenses) else 0  # forward only, ~1/3 cost
    return train + evaluation + bank


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="*", help="rows to run: " + ", ".join(ROWS))
    ap.add_argument("--all", action="store_true", help="every row, in order")
    ap.add_argument("--list", action="store_true", help="print rows, commands and GPU-hour estimates, run nothing")
    ap.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, 200 test points: minutes on a GPU")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--data-dir", default=None, help="where torchvision's CIFAR-10 lives (downloaded there if online)")
    ap.add_argument("--out", default="runs/reproduce")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--throughput", type=float, default=10000.0, help="assumed forward+backward img/s of the GPU")
    a = ap.parse_args(argv)
    rows = list(ROWS) if a.all or a.list else a.rows
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        ap.error(f"name rows from {', '.join(ROWS)} (or --all / --list)" + (f"; unknown: {unknown}" if unknown else ""))
    for name in rows:
        hours = passes(name, a) / a.throughput / 3600
        print(f"# {name}: {ROWS[name][2]}; estimated {hours:.1f} GPU-hours at {a.throughput:g} img/s (not measured)")
        for cmd in commands(name, a):
            print(shlex.join(cmd))
            if not a.list:
                subprocess.run([sys.executable, "-m", "advkit", *cmd[1:]], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
