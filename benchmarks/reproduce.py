"""The source documents' tables at full scale: CIFAR-10 ResNet-18, one command per row.

Each row is an ``advkit train`` command and an ``advkit eval`` command (PGD-20,
then the standard AutoAttack; stochastic models get advkit's adaptive
evaluation by themselves). The recipe is the field's standard one for
CIFAR-10 ResNet-18 adversarial training, which the documents follow without
spelling it out: SGD with momentum 0.9, weight decay 5e-4, batch 128, learning
rate 0.1 divided by 10 at 50 % and 75 % of the epochs, crop-and-flip
augmentation, Linf eps 8/255 with a 10-step PGD of step 2/255 (TRADES and
MART: their own start and losses, beta 6 and 5); seed 004's row is L2 PGD-AT
at eps 0.5 (20 steps of 0.1) and is evaluated under L2. Rows whose source gives a recipe of its own follow
it: ``lwta`` (source 001: WRN-34 widen 1, 30 epochs, 5 PGD steps of 0.007), ``mixed-finetune`` (source 002:
45 epochs fine-tuning the ``standard`` row's checkpoint on examples precomputed once, eps 0.03),
``mixed-draw`` (source 001's one-source-per-batch mix) and the PART rows at s = 1 and s = 10. What still
differs from a row's source is printed under it (``--list``).

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
from dataclasses import dataclass
from pathlib import Path

AT = "pgd-at:steps=10,step_size=2/255"
TRADES = "trades:steps=10,step_size=2/255,beta=6"
MART = "mart:steps=10,step_size=2/255,beta=5"
CSA = "csa:bank={bank}"
RESNET = "resnet18-cifar"


@dataclass
class Row:
    """One row: the defenses, the training threat ``"norm eps"``, the source and its numbers (clean / PGD-20 /
    AA), and where the row follows its source's own recipe rather than the common one: ``model``, ``epochs``
    (None: ``--epochs``), ``start`` (a row whose checkpoint it fine-tunes) and ``deviation``, what still differs
    from the source and why."""

    defenses: list[str]
    threat: str
    source: str
    model: str = RESNET
    epochs: int | None = None
    deviation: str = ""
    start: str = ""  # another row whose best checkpoint this row fine-tunes (--weights)


LWTA_SOURCE = ("seed 001 (WRN-34 widen 1, 30 epochs, SGD 0.1, PGD 5 steps of 0.007 at 8/255, ELBO): 67.9 clean / "
               "36.23 PGD under its table's attack settings (eps 0.3, step 0.01)")
ROWS: dict[str, Row] = {
    "standard": Row([], "Linf 8/255", "the pretrained model CSA's bank is computed from"),
    "pgd-at": Row([AT], "Linf 8/255", "seed 000: 84.49 / 46.38 / 44.06; seed 003: 82.58 / 43.69 / 41.63"),
    "pgd-at+csa": Row([AT, CSA], "Linf 8/255", "seed 000: 82.91 / 49.42 / 46.56"),
    "trades": Row([TRADES], "Linf 8/255", "seed 000: 81.71 / 51.08 / 47.74"),
    "trades+csa": Row([TRADES, CSA], "Linf 8/255", "seed 000: 81.62 / 52.06 / 49.16"),
    "mart": Row([MART], "Linf 8/255", "(PART-M's baseline)"),
    "part": Row([AT, "part"], "Linf 8/255", "seed 003, s = 1: 83.42 / 43.65 / 41.74"),
    "part-t": Row([TRADES, "part"], "Linf 8/255", "seed 003, s = 1: 79.36 / 48.90 / 45.97"),
    "part-m": Row([MART, "part"], "Linf 8/255", "seed 003, s = 1: 78.67 / 50.26 / 45.19"),
    "part-s10": Row([AT, "part:every=10"], "Linf 8/255", "seed 003, s = 10: 83.77 / 43.36 / 41.41"),
    "part-t-s10": Row([TRADES, "part:every=10"], "Linf 8/255", "seed 003, s = 10: 80.13 / 48.72 / 45.60"),
    "part-m-s10": Row([MART, "part:every=10"], "Linf 8/255", "seed 003, s = 10: 80.00 / 49.71 / 44.61"),
    "mixed": Row(["mixed:clean=0.5,fgsm=0.25,pgd=0.25,pgd.steps=14,pgd.alpha=0.00214"], "Linf 8/255",
                 "seed 002 (its own 100k-image task: no CIFAR-10 numbers)",
                 deviation="the batch mix of source 002 trained from scratch with examples made online at 8/255; "
                           "source 002's own recipe (fine-tuning on precomputed examples) is the mixed-finetune row"),
    "mixed-finetune": Row(["mixed:clean=0.5,fgsm=0.25,pgd=0.25,precompute=true,pgd.steps=14,pgd.alpha=0.00214"],
                          "Linf 0.03", "seed 002's recipe (FGSM eps 0.03, PGD eps 0.03 with 14 steps of 0.00214: "
                          "62.76 clean / 39.26 FGSM / 0.06 PGD on its own task)", epochs=45, start="standard",
                          deviation="source 002 fine-tunes an ImageNet-pretrained ResNet-50 on its own 100k-image "
                                    "task (learning rate not given); here the CIFAR-10 ResNet-18 of the standard row "
                                    "with the common recipe's SGD at 0.1"),
    "mixed-draw": Row(["mixed:mode=draw,clean=0.5,pgd=0.125,fgsm=0.125,cw=0.125,noise=0.125"], "Linf 8/255",
                      "seed 001's mixed adversarial training (one source per iteration; no CIFAR-10 numbers)",
                      deviation="source 001 also smooths the labels; add --defense label-smoothing for it"),
    "noise-injection": Row([AT, "noise-injection"], "Linf 8/255", "seed 001 (no recipe of its own: PGD-AT's)",
                           deviation="source 001 gives no training recipe for noise injection; Rakin et al. "
                                     "2018 train it with PGD-AT, as here"),
    "lwta": Row(["pgd-at:steps=5,step_size=0.007", "lwta"], "Linf 8/255", LWTA_SOURCE, model="wrn-34-10:widen=1",
                epochs=30, deviation="no ELBO: the KL terms of the winner posteriors are not added to the loss, "
                                     "which advkit's objectives own (docs/lwta.md)"),
    "l2-pgd-at": Row(["pgd-at:steps=20,step_size=0.1"], "L2 0.5", "seed 004: 85.0 clean / 64.6 L2 PGD at 0.5"),
}
STOCHASTIC = {"noise-injection", "lwta"}
# GFLOPs of one forward pass of a 32x32 image (torch.utils.flop_counter.FlopCounterMode, multiply-adds counted once)
FLOPS = {RESNET: 0.556, "wrn-34-10:widen=1": 0.0691}


def plan(a) -> dict:
    """Epochs, test points and attack budgets: the full recipe, or ``--quick`` for a minutes-long check."""
    if a.quick:
        return {"n_train": 2000, "n": 200, "bank": ["--per-class", "8"]}
    return {"n_train": None, "n": 10000, "bank": []}


def commands(name: str, a) -> list[list[str]]:
    """The advkit commands of one row, in order."""
    row = ROWS[name]
    norm, eps = row.threat.split()
    p = plan(a)
    epochs = 1 if a.quick else row.epochs or a.epochs
    out = Path(a.out) / name
    base = ["advkit", "--seed", str(a.seed)]
    data = ["--dataset", "cifar10"] + (["--data-dir", a.data_dir] if a.data_dir else [])
    cmds = []
    bank = Path(a.out) / "csa-bank"
    if any(d.startswith("csa") for d in row.defenses):
        cmds.append(base + ["csa-bank", "--model", str(Path(a.out) / "standard" / "best.safetensors"), *data,
                            "--out", str(bank), *p["bank"]])
    train = base + ["train", "--model", row.model, *data, "--epochs", str(epochs), "--batch-size", "128",
                    "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4", "--schedule", "multistep",
                    "--norm", norm, "--eps", eps, "--out", str(out)]
    if p["n_train"]:
        train += ["--n-train", str(p["n_train"])]
    if row.start:
        train += ["--weights", str(Path(a.out) / row.start / "best.safetensors")]
    for d in row.defenses:
        train += ["--defense", d.format(bank=bank)]
    cmds.append(train)
    attacks = "pgd,aa" if norm == "Linf" else "pgd"
    cmds.append(base + ["eval", "--model", str(out / "best.safetensors"), *data, "--norm", norm, "--eps", eps,
                        "--attacks", attacks, "--attack-opt", "pgd.steps=20", "-n", str(p["n"]),
                        "--out", str(out / "eval")])
    return cmds


def passes(name: str, a) -> float:
    """Forward+backward passes of one row (train + eval), an estimate for the GPU-hour column."""
    row = ROWS[name]
    defenses = row.defenses
    steps = 20 if row.threat.startswith("L2") else 5 if name == "lwta" else 10
    per_image = 1 + (steps if defenses else 0) + (1 if any(d.startswith(("trades", "mart")) for d in defenses) else 0)
    eot = 20 if STOCHASTIC & {d.split(":")[0] for d in defenses} else 1
    p = plan(a)
    epochs = 1 if a.quick else row.epochs or a.epochs
    train = (p["n_train"] or 50000) * epochs * per_image * FLOPS[row.model] / FLOPS[RESNET]
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
        row = ROWS[name]
        print(f"# {name}: {row.source}; estimated {hours:.1f} GPU-hours at {a.throughput:g} img/s (not measured)")
        if row.deviation:
            print(f"#   differs from the source: {row.deviation}")
        for cmd in commands(name, a):
            print(shlex.join(cmd))
            if not a.list:
                subprocess.run([sys.executable, "-m", "advkit", *cmd[1:]], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
