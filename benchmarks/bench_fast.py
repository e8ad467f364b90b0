"""``fast`` against standard AutoAttack: robust accuracy, the points each breaks, and the passes each spends.

For every model the script runs ``advkit eval`` twice on the same first ``-n`` test
points at the model's usual budget: once ``-a aa`` (standard AutoAttack, pyautoattack:
APGD-CE, APGD-T, FAB-T, Square) and once ``-a fast`` (advkit's schedule of AutoAttack's
attacks). From the two ``report.json`` (passes and seconds of each attack) and
``results.csv`` (per point: clean prediction, broken or not) it computes clean accuracy,
both robust accuracies, the points only one of them breaks, the coverage
(|broken by both| / |broken by AutoAttack|), forward+backward passes and seconds of each
and the passes ratio fast / AutoAttack, and checks the issue's three goals per model:

* fast's robust accuracy <= AutoAttack's + 0.2 point;
* coverage >= 99 %;
* fast's passes <= 0.15 x AutoAttack's passes (forward + backward, as advkit counts them).

The models: the bundled ``smallcnn-fmnist-at``; the PGD-AT, TRADES and MART rows of the
CPU-scale results protocol (``benchmarks/defense_table.py``, whose own training commands
are reused); its LWTA + PGD-AT row, evaluated deterministically (argmax winners) through a
copy of its checkpoint whose sidecar sets ``lwta.deterministic=true``; and a CIFAR-sized
ResNet-18 (width 16) adversarially trained on ``fmnist-mini`` resized to 3x32x32 RGB
(not CIFAR-10: no CIFAR-10 is available offline). Models are trained when missing
(``advkit train``, resumed when interrupted); evaluations resume (``--out``).

    python benchmarks/bench_fast.py                     # train what is missing, evaluate, write everything
    python benchmarks/bench_fast.py --models pgd-at,mart --n 100
    python benchmarks/bench_fast.py --print-commands    # the advkit commands, nothing run
    python benchmarks/bench_fast.py --report            # only recompute results.json and the docs table

Outputs: ``OUT/<model>/`` (training run, ``eval-aa``, ``eval-fast``, ``logs/``),
``OUT/results.json``, and the section of ``docs/benchmarks.md`` between
``<!-- bench_fast:begin -->`` and ``<!-- bench_fast:end -->`` (``--no-docs`` to skip).
Run it single-threaded (``OMP_NUM_THREADS=1``, the default of ``--threads``), one job at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from fast_report import markdown, missed, reading, table  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "benchmarks.md"
GOAL_ACC, GOAL_COVERAGE, GOAL_RATIO = 0.002, 0.99, 0.15

PROTOCOL = {"pgd-at": "pgd-at", "trades": "trades", "mart": "mart", "lwta": "lwta+pgd-at"}  # model -> defense_table row
CIFAR = "cifar-sized"
MODELS = ["smallcnn-fmnist-at", "pgd-at", "trades", "mart", "lwta", CIFAR]
LABELS = {
    "smallcnn-fmnist-at": "bundled `smallcnn-fmnist-at` (PGD-AT, 10 epochs)",
    "pgd-at": "results protocol: PGD-AT",
    "trades": "results protocol: TRADES",
    "mart": "results protocol: MART",
    "lwta": "results protocol: LWTA + PGD-AT, evaluated deterministically",
    CIFAR: "CIFAR-sized (3x32x32) ResNet-18 w16, PGD-AT, on fmnist-mini resized (not CIFAR-10)",
}


# ---------------------------------------------------------------- models and their commands

def protocol_train(model: str, a) -> list[str]:
    """The results protocol's own training command of ``model``'s row (``defense_table.py --print-commands``)."""
    sys.path.insert(0, str(HERE))
    import defense_table

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        defense_table.main(["--print-commands", "--rows", PROTOCOL[model], "--out", str(a.out), "--seed", str(a.seed)])
    lines = [shlex.split(line) for line in buf.getvalue().splitlines() if " train " in line]
    if len(lines) != 1:
        raise SystemExit(f"defense_table.py printed {len(lines)} training commands for {PROTOCOL[model]!r}")
    return lines[0]


def cifar_dataset(a, split_opts: str = "subset=balanced") -> str:
    return f"imagefolder:root={Path(a.out) / 'data' / 'fmnist32rgb'},{split_opts}"


def cifar_train(a) -> list[str]:
    """A CIFAR-architecture model small enough for the CPU: ResNet-18 at width 16, PGD-AT (3 steps of 0.4 eps),
    the results protocol's optimizer (Adam 1e-3, cosine, no weight decay), all 10,000 training images."""
    step = f"{0.4 * eval(a.cifar_eps, {}):.5f}"  # noqa: S307 (a fraction like 8/255 from our own option)
    return ["advkit", "--seed", str(a.seed), "-q", "train", "--model", "resnet18-cifar:width=16",
            "--dataset", cifar_dataset(a), "--epochs", str(a.cifar_epochs), "--batch-size", "128",
            "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0", "--schedule", "cosine",
            "--eps", a.cifar_eps, "--n-val", "500", "--val-attack", "pgd",
            "--defense", f"pgd-at:steps=3,step_size={step}", "--out", str(run_dir(a, CIFAR))]


def run_dir(a, model: str) -> Path:
    return Path(a.out) / (PROTOCOL.get(model, model))


def train_command(model: str, a) -> list[str] | None:
    if model in PROTOCOL:
        return protocol_train(model, a)
    if model == CIFAR:
        return cifar_train(a)
    return None  # bundled


def model_spec(model: str, a) -> str:
    """What ``advkit eval --model`` gets: the bundled name, the last checkpoint, or LWTA's deterministic copy."""
    if model == "lwta":
        return str(run_dir(a, model) / "deterministic" / "last.safetensors")
    if model in PROTOCOL or model == CIFAR:
        return str(run_dir(a, model) / "last.safetensors")
    return model


def eval_setup(model: str, a) -> tuple[str, str, int]:
    """(dataset, eps, n) of ``model``'s evaluation."""
    if model == CIFAR:
        return cifar_dataset(a), a.cifar_eps, a.cifar_n or a.n
    return "fmnist-mini", "0.1", a.n


def eval_command(model: str, attack: str, a) -> list[str]:
    dataset, eps, n = eval_setup(model, a)
    return ["advkit", "--seed", str(a.seed), "-q", "eval", "--model", model_spec(model, a), "--dataset", dataset,
            "--attacks", attack, "--eps", eps, "-n", str(n), "--out", str(run_dir(a, model) / f"eval-{attack}")]


# ---------------------------------------------------------------- running

def pinned_source(a) -> Path | None:
    """With ``--pin REV``: advkit and its plugins as committed at REV (``git archive``, read-only for the repository)
    under OUT/src-<commit>, so that edits others make to the working tree during a run of hours cannot reach it."""
    if not a.pin:
        return None
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{a.pin}^{{commit}}"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    dst = (Path(a.out) / f"src-{sha[:12]}").resolve()
    if not (dst / "DONE").exists():
        dst.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "advkit", "plugins"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
        (dst / "DONE").write_text(sha + "\n")
    return dst


def run(cmd: list[str], log: Path, a) -> float:
    """Run an ``advkit`` command (this interpreter's advkit, or the ``--pin`` snapshot's) with its output in ``log``;
    returns seconds. ``python -P``: the working directory does not shadow the snapshot."""
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1"}
    src = pinned_source(a)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(src / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])])
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with log.open("w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-P", "-m", "advkit", *cmd[1:]], env=env, stdout=f, stderr=subprocess.STDOUT,
                              cwd=REPO)
    seconds = time.time() - t0
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise RuntimeError(f"{shlex.join(cmd[:6])} ... failed ({log}): {tail[0]}")
    log.with_suffix(".seconds").write_text(f"{seconds:.0f}\n")
    return seconds


def epochs_of(cmd: list[str]) -> int:
    return int(cmd[cmd.index("--epochs") + 1])


def train(model: str, a) -> str:
    """Train ``model`` unless its run holds the last epoch already (an unfinished run is resumed)."""
    cmd = train_command(model, a)
    if cmd is None:
        return f"{model}: bundled"
    out = run_dir(a, model)
    last = out / "last.json"
    if last.exists() and json.loads(last.read_text()).get("epoch", 0) >= epochs_of(cmd):
        return f"{model}: trained"
    if model == CIFAR:
        build_cifar_data(Path(a.out) / "data" / "fmnist32rgb")
    started = last.exists() or (out / "config.json").exists()  # --resume restarts a run stopped before epoch 1
    seconds = run(cmd + (["--resume"] if started else []), out / "logs" / "train.log", a)
    return f"{model}: trained in {seconds:.0f} s"


def deterministic_lwta(a) -> Path:
    """A copy of the LWTA run's last checkpoint whose sidecar says ``lwta.deterministic=true`` (argmax winners,
    no Gumbel noise): the same weights, evaluated as a deterministic model. Only the sidecar differs."""
    src = run_dir(a, "lwta") / "last.safetensors"
    dst = src.parent / "deterministic" / "last.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    meta = json.loads(src.with_suffix(".json").read_text())
    for d in meta["defenses"]:
        if d["name"] == "lwta":
            d["params"]["deterministic"] = True
    meta["stochastic"] = False
    meta["note"] = f"copy of {src} with lwta deterministic=true (made by benchmarks/bench_fast.py)"
    if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
        shutil.copyfile(src, dst)
    dst.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def build_cifar_data(root: Path) -> None:
    """fmnist-mini as a CIFAR-sized image folder: every image resized to 32x32 (bilinear) and written as RGB
    (the grey value in all three channels), ROOT/{train,test}/<class>/<index>.png."""
    done = root / "DONE"
    if done.exists():
        return
    import numpy as np
    from PIL import Image

    import advkit

    for split in ("train", "test"):
        data = advkit.load_dataset("fmnist-mini", split)
        x, y = data.tensors()
        names = data.info.classes
        for i, (img, label) in enumerate(zip(x, y.tolist())):
            folder = root / split / f"{label}-{names[label].replace('/', '-').replace(' ', '_')}"
            folder.mkdir(parents=True, exist_ok=True)
            grey = Image.fromarray((img[0].float().numpy() * (255 if img.is_floating_point() else 1)).round()
                                   .clip(0, 255).astype(np.uint8))
            grey.resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{i:05d}.png")
    done.write_text("fmnist-mini resized to 32x32, grey copied to RGB\n")


def evaluate(model: str, a) -> list[str]:
    if model == "lwta":
        deterministic_lwta(a)
    lines = []
    for attack in ("aa", "fast"):
        out = run_dir(a, model) / f"eval-{attack}"
        if (out / "report.json").exists():
            lines.append(f"{model}: {attack} evaluated")
            continue
        seconds = run(eval_command(model, attack, a), run_dir(a, model) / "logs" / f"eval-{attack}.log", a)
        lines.append(f"{model}: {attack} evaluated in {seconds:.0f} s")
    return lines


# ---------------------------------------------------------------- comparison

def read_eval(folder: Path) -> dict:
    """report.json (its one attack) and results.csv of one evaluation."""
    rep = json.loads((folder / "report.json").read_text())
    with (folder / "results.csv").open() as f:
        rows = {int(r["index"]): r for r in csv.DictReader(f)}
    return {"report": rep, "attack": rep["attacks"][0], "rows": rows}


def compare(model: str, a) -> dict | None:
    base = run_dir(a, model)
    if not all((base / f"eval-{k}" / "report.json").exists() for k in ("aa", "fast")):
        return None
    aa, fast = read_eval(base / "eval-aa"), read_eval(base / "eval-fast")
    same = sorted(set(aa["rows"]) & set(fast["rows"]))
    clean_differs = [i for i in same if aa["rows"][i]["clean_pred"] != fast["rows"][i]["clean_pred"]]
    broken = {k: {i for i in same if int(e["rows"][i]["clean_correct"]) and not int(e["rows"][i]["robust"])}
              for k, e in (("aa", aa), ("fast", fast))}
    n = len(same)
    out = {"model": model, "label": LABELS[model], "n": n, "eps": aa["report"]["threat_model"]["eps"],
           "dataset": aa["report"]["dataset"]["name"], "clean_pred_differs": len(clean_differs),
           "clean": sum(int(aa["rows"][i]["clean_correct"]) for i in same) / n}
    for k, e in (("aa", aa), ("fast", fast)):
        p = e["attack"]["passes"]
        out[k] = {"robust": sum(int(e["rows"][i]["robust"]) for i in same) / n, "broken": len(broken[k]),
                  "attempted": e["attack"]["attempted"], "forward": p["forward"], "backward": p["backward"],
                  "passes": p["forward"] + p["backward"], "seconds": e["attack"]["seconds"],
                  "implementation": e["attack"]["implementation"], "report_robust": e["report"]["robust_accuracy"]}
    out["only_aa"] = sorted(broken["aa"] - broken["fast"])
    out["only_fast"] = sorted(broken["fast"] - broken["aa"])
    out["coverage"] = len(broken["aa"] & broken["fast"]) / len(broken["aa"]) if broken["aa"] else 1.0
    out["ratio"] = out["fast"]["passes"] / out["aa"]["passes"]
    out["seconds_ratio"] = out["fast"]["seconds"] / out["aa"]["seconds"]
    out["goals"] = {"accuracy": out["fast"]["robust"] <= out["aa"]["robust"] + GOAL_ACC + 1e-12,
                    "coverage": out["coverage"] >= GOAL_COVERAGE, "passes": out["ratio"] <= GOAL_RATIO}
    out["commands"] = [shlex.join(c) for c in ([train_command(model, a)] if train_command(model, a) else [])]
    out["commands"] += [shlex.join(eval_command(model, k, a)) for k in ("aa", "fast")]
    return out


# ---------------------------------------------------------------- main

def machine(a) -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), cpu)
    return (f"{os.cpu_count()} CPU cores ({cpu}, a virtual machine) shared with other jobs, no GPU, "
            f"{a.threads} thread(s) per job (OMP_NUM_THREADS), "
            + ("two jobs at a time (the command lines above ran side by side, so the seconds are indicative; the "
               "passes are counted)" if len(a.ran) > 1 else "one job at a time"))


def versions(results: list[dict], a) -> str:
    for r in results:
        v = json.loads((run_dir(a, r["model"]) / "eval-aa" / "report.json").read_text())["versions"]
        return ", ".join(f"{k} {v[k]}" for k in ("advkit", "torch", "pyautoattack") if k in v)
    return ""


def wall(a) -> str:
    """The sum of every job's wall clock (train and eval), from the ``.seconds`` files the runs left."""
    jobs = list(Path(a.out).glob("*/logs/*.seconds"))
    total = sum(float(p.read_text()) for p in jobs)
    train = sum(float(p.read_text()) for p in jobs if p.name == "train.seconds")
    return (f"{int(total // 3600)} h {round(total % 3600 / 60)} min over {len(jobs)} jobs "
            f"({train / 60:.0f} min of it training)")


def measured_on(a) -> str:
    """The day the newest evaluation finished (its report.json), so that ``--report`` keeps the date it reports."""
    reports = list(Path(a.out).glob("*/eval-*/report.json"))
    last = max((r.stat().st_mtime for r in reports), default=time.time())
    return datetime.fromtimestamp(last, timezone.utc).strftime("%Y-%m-%d")


def shown_args(args: list[str]) -> list[str]:
    """The command line without the prose it carries for the docs (``--ran``, ``--reading``)."""
    out, skip = [], False
    for x in args:
        if skip or x.split("=", 1)[0] in ("--ran", "--reading"):
            skip = not skip and "=" not in x
            continue
        out.append(x)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--out", default="runs/bench_fast")
    ap.add_argument("-n", "--n", type=int, default=200, help="test points per model (the first n)")
    ap.add_argument("--cifar-n", type=int, default=0, help="test points of the CIFAR-sized model (0: as --n)")
    ap.add_argument("--cifar-eps", default="8/255", help="the CIFAR-sized model's training and evaluation budget")
    ap.add_argument("--cifar-epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="OMP threads of each job")
    ap.add_argument("--pin", default="", metavar="REV", help="run advkit as committed at REV (e.g. HEAD), extracted "
                    "under OUT, instead of the working tree (which others may be editing)")
    ap.add_argument("--print-commands", action="store_true")
    ap.add_argument("--report", action="store_true", help="only recompute results.json and the docs table")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--reading", default="", help="more words after the computed reading of the results in the docs")
    ap.add_argument("--ran", action="append", default=[], metavar="COMMAND",
                    help="with --report: a command line that measured the results (repeat it for runs side by side); "
                    "the docs show them above the table")
    a = ap.parse_args(argv)
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    if set(a.models) - set(MODELS):
        ap.error(f"unknown models {sorted(set(a.models) - set(MODELS))}; choose from {MODELS}")
    if a.pin:
        a.pin = subprocess.run(["git", "rev-parse", "--verify", f"{a.pin}^{{commit}}"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()  # once: a commit made during the run changes nothing
    if a.print_commands:
        for m in a.models:
            for c in ([train_command(m, a)] if train_command(m, a) else []) + [eval_command(m, k, a) for k in ("aa", "fast")]:
                print(shlex.join(c))
        return
    if not a.report:
        for m in a.models:  # one job at a time: train everything first, then evaluate
            print(train(m, a), flush=True)
        for m in a.models:
            for line in evaluate(m, a):
                print(line, flush=True)
    results = [r for r in (compare(m, a) for m in a.models) if r is not None]
    _, eps_cifar, n_cifar = eval_setup(CIFAR, a)
    meta = {"date": measured_on(a), "machine": machine(a), "pin": a.pin,
            "argv": shlex.join(["python", "benchmarks/bench_fast.py", *shown_args(argv if argv is not None else sys.argv[1:])]),
            "ran": a.ran,
            "versions": versions(results, a), "models": a.models, "wall": wall(a), "cifar_eps": eps_cifar,
            "cifar_n_note": f"; on its first {n_cifar} test points only (AutoAttack's cost)" if n_cifar != a.n else "",
            "missed": missed(results)}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(table(results))
    for line in meta["missed"]:
        print("goal missed:", line)
    if not a.no_docs and results:
        write_section(DOCS, "bench_fast", markdown(results, meta, " ".join(filter(None, [reading(results), a.reading]))))


if __name__ == "__main__":
    main()
