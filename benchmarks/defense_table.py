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
    python benchmarks/defense_table.py --seed 1 --out runs/table-seed1 --bank runs/table/csa-bank-standard
    python benchmarks/defense_table.py --markdown --seed-runs runs/table,runs/table-seed1 --subset 200 \
        --paired trades:pgd-at,... --docs                     # the tables of docs/results.md, over both seeds

The result goes to ``OUT/table.md`` (also printed); ``--docs`` writes the tables (``table_report.py``)
between the ``defense_table`` markers of docs/results.md.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import table_report as R  # noqa: E402
from _docs import write_section  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.md"

AT = "pgd-at:steps={steps},step_size={step}"
TRADES = "trades:steps={steps},step_size={step}"
CSA = "csa:alpha={alpha},bank={bank}"  # the NFC bank, built once (see bank_command)
ROWS = {  # name -> defenses (the training adversary: {steps} PGD steps of {step}); cheapest to evaluate first
    "standard": [],
    "pgd-at": [AT],
    "trades": [TRADES],
    "part": [AT, "part"],
    "part-t": [TRADES, "part"],
    "mart": ["mart:steps={steps},step_size={step}"],
    "mixed": ["mixed:clean=0.5,fgsm=0.25,pgd=0.25"],
    "noise-injection+pgd-at": [AT, "noise-injection"],
    "lwta+pgd-at": [AT, "lwta"],
    "csa+pgd-at": [AT, CSA.replace("{alpha}", "0.5")],
    "csa+trades": [TRADES, CSA.replace("{alpha}", "0.5")],
    "csa-0.25+pgd-at": [AT, CSA.replace("{alpha}", "0.25")],
    "csa-1+pgd-at": [AT, CSA.replace("{alpha}", "1")],
    "csa-2+pgd-at": [AT, CSA.replace("{alpha}", "2")],
}
STOCHASTIC = {"lwta", "noise-injection"}  # evaluated with aa-rand (APGD-CE + APGD-DLR with EOT) by advkit itself


def commands(name: str, a) -> tuple[list[str], list[str]]:
    run = Path(a.out) / name
    train = ["advkit", "--seed", str(a.seed), "-q", "train", "--model", "smallcnn", "--dataset", "fmnist-mini",
             "--n-train", str(a.n_train), "--epochs", str(a.epochs), "--batch-size", "128", "--optimizer", "adam",
             "--lr", "1e-3", "--weight-decay", "0", "--schedule", "cosine", "--eps", a.eps, "--n-val", "500",
             "--val-attack", "pgd", "--out", str(run)]
    for d in ROWS[name]:
        train += ["--defense", d.format(steps=a.steps, step=a.step_size, bank=bank_dir(a))]
    stochastic = bool(STOCHASTIC & set(d.split(":")[0] for d in ROWS[name]))
    n = a.n_stochastic if stochastic and a.n_stochastic else a.n
    evaluate = ["advkit", "--seed", str(a.seed), "-q", "eval", "--model", str(run / "last.safetensors"),
                "--attacks", "pgd,aa", "--attack-opt", "pgd.steps=20", "--eps", a.eps, "-n", str(n),
                "--out", str(run / "eval")]
    if not a.full_aa and not stochastic:
        evaluate[-2:-2] = ["--attack-opt", "aa.attacks=apgd-ce+apgd-t"]
    return train, evaluate


def bank_dir(a) -> Path:
    return Path(a.bank) if a.bank else Path(a.out) / ("csa-bank" if a.bank_from == "bundled" else "csa-bank-standard")


def bank_command(a) -> list[str]:
    """The NFC bank with the bank's defaults: of the table's own ``standard`` row, from its training images
    (``--bank-from standard``), or of the bundled standard model, trained on all 10,000 (``bundled``)."""
    model = ["--model", "smallcnn-fmnist"] if a.bank_from == "bundled" else \
        ["--model", str(Path(a.out) / "standard" / "last.safetensors"), "-n", str(a.n_train)]
    return ["advkit", "--seed", str(a.bank_seed), "-q", "csa-bank", *model, "--dataset", "fmnist-mini",
            "--out", str(bank_dir(a))]


def build_bank(a) -> str:
    """Run ``advkit csa-bank`` once, sharded over ``--jobs`` processes (torchrun); a finished bank is found, a partial one resumed."""
    if any(bank_dir(a).glob("nfc-bank-*.safetensors")):
        return "csa-bank: found"
    cmd = bank_command(a)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.jobs)] if a.jobs > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    t0 = time.time()
    proc = subprocess.run([*launcher, "-m", "advkit", *cmd[1:]], env=env, capture_output=True, text=True)
    (bank_dir(a) / "logs").mkdir(parents=True, exist_ok=True)
    (bank_dir(a) / "logs" / "csa-bank.log").write_text(shlex.join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return f"csa-bank: failed: {tail[0]}"
    (bank_dir(a) / "logs" / "csa-bank.seconds").write_text(f"{time.time() - t0:.0f}\n")
    return "csa-bank: done"


def label(name: str) -> str:
    """The row's defenses as the table names them; CSA with its alpha."""
    parts = []
    for d in ROWS[name]:
        kind, _, opts = d.partition(":")
        alpha = dict(kv.split("=", 1) for kv in opts.split(",") if "=" in kv).get("alpha") if kind == "csa" else None
        parts.append(f"csa (alpha {alpha})" if alpha else kind)
    return " + ".join(parts) or "none (standard)"


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


def nfc_stats(a) -> str:
    """How large the CSA augmentation is: the bank's NFC images against the images they come from."""
    import torch

    from advkit._internal.data import load_dataset
    from advkit_csa.bank import NFCBank

    bank = NFCBank.load(bank_dir(a))
    nfc = bank.spatial().flatten(1)
    x, _ = load_dataset(bank.meta["dataset"], bank.meta["split"]).tensors()
    energy = (bank.spectra.abs() ** 2).flatten(1).sum(1)
    total = (torch.fft.fft2(x[bank.indices].float()).abs() ** 2).flatten(1).sum(1)
    linf = nfc.abs().amax(1)
    return (f"NFC bank {bank_dir(a)}: {len(nfc)} images; Linf of real(IFFT(p)): median {linf.median():.3f}, "
            f"mean {linf.mean():.3f}; L2 median {nfc.norm(dim=1).median():.3f}; share of the image's spectral "
            f"energy: median {(energy / total).median():.3f}; negative players {(bank.values < 0).float().mean():.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    ap.add_argument("--out", default="runs/table")
    ap.add_argument("--bank", default=None, help="the CSA rows' NFC bank folder (default OUT/csa-bank-standard, or "
                    "OUT/csa-bank with --bank-from bundled; built when missing)")
    ap.add_argument("--bank-from", choices=("standard", "bundled"), default="standard",
                    help="the model and images of the bank: the standard row's checkpoint and its --n-train training "
                         "images (the rows' own data), or the bundled smallcnn-fmnist and all 10,000")
    ap.add_argument("--bank-seed", type=int, default=0, help="seed of the bank's images and pairs (not --seed: "
                    "rows trained with other seeds share one bank)")
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
    ap.add_argument("--paired", default="", metavar="ROW:BASE,...",
                    help="also print ROW - BASE on the same points with the paired standard error")
    ap.add_argument("--nfc-stats", action="store_true", help="also print the size of the CSA bank's NFC images")
    ap.add_argument("--seed-runs", default="", metavar="DIR,...",
                    help="the tables over these run folders (one per training seed), for the rows finished in all")
    ap.add_argument("--subset", type=int, default=0, metavar="K",
                    help="also print every finished row on its first K test points (the stochastic rows' points)")
    ap.add_argument("--docs", action="store_true", help="also write the tables into docs/results.md")
    a = ap.parse_args(argv)
    a.rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = [r for r in a.rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    csa = any(d.startswith("csa:") for name in a.rows for d in ROWS[name])
    a.paired = [tuple(p.split(":", 1)) for p in a.paired.split(",") if p.strip()]
    bad = [":".join(p) for p in a.paired if len(p) != 2 or not set(p) <= set(ROWS)]
    if bad:
        ap.error(f"--paired takes ROW:BASE pairs of rows from {list(ROWS)}; not understood: {bad}")
    if a.print_commands:
        if csa:
            print(shlex.join(bank_command(a)))
        for name in a.rows:
            for cmd in commands(name, a):
                print(shlex.join(cmd))
        return
    if not a.markdown:
        if csa:
            if a.bank_from == "standard" and not a.bank:
                print(run_row("standard", a), flush=True)  # the bank comes from its checkpoint
            print(build_bank(a), flush=True)
        with ThreadPoolExecutor(a.jobs) as pool:
            for line in pool.map(lambda r: run_row(r, a), a.rows):
                print(line, flush=True)
    folders = [Path(d) for d in a.seed_runs.split(",") if d] or [Path(a.out)]
    md = R.main_table(Path(a.out), a.rows, label)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "table.md").write_text(md + "\n")
    parts = [R.seeds_table(folders, a.rows, label) if a.seed_runs else md]
    if a.paired:
        parts.append(R.paired_table(folders, a.paired, label))
    if a.subset:
        parts.append(R.subset_table(folders, a.rows, label, a.subset))
    text = "\n\n".join(parts)
    print(text)
    if a.nfc_stats:
        print()
        print(nfc_stats(a))
    if a.docs:
        write_section(DOCS, "defense_table", text)


if __name__ == "__main__":
    main()
