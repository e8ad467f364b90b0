"""Evaluation overheads, measured as ratios within one run (run by hand on an idle machine).

1. advkit ``pgd`` vs torchattacks' PGD called directly: same model, data, seed (target ratio <= 1.03).
2. ``eval --attacks pgd,cw,aa`` (cascade) vs ``aa`` alone on the PGD-AT model (target <= 1.15).
3. ``torchrun --nproc_per_node 2 -m advkit eval`` vs one process.
4. advkit's ``aa`` (the whole ``advkit.evaluate`` run) vs the AutoAttack package called directly, standard
   version, same points and batches, alternated (target <= 1.03).

    python benchmarks/bench_eval.py [--model smallcnn-fmnist] [--robust-model smallcnn-fmnist-at] [--n 500] [--n-aa 200]
    python benchmarks/bench_eval.py --only-aa-overhead --n-overhead 60 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smallcnn-fmnist")
    p.add_argument("--robust-model", default="smallcnn-fmnist-at", help="model of part 2 (AutoAttack has work to do on it)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--n-aa", type=int, default=200, help="points of part 2")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-aa", action="store_true")
    p.add_argument("--skip-torchrun", action="store_true")
    p.add_argument("--only-aa-overhead", action="store_true", help="part 4 only")
    p.add_argument("--n-overhead", type=int, default=60, help="points of part 4")
    a = p.parse_args()
    if a.only_aa_overhead:
        return aa_overhead(a)

    import torchattacks

    import advkit
    from advkit import evaluate

    model = advkit.load_model(a.model)
    data = advkit.load_dataset("fmnist-mini", "test", n=a.n)
    x, y = data.tensors()
    eps = 0.1
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {a.model}, n {a.n}")

    # 1. wrapper overhead: interleave to share any drift in machine load
    atk = advkit.create_attack("pgd", model, eps=eps)
    direct = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)

    def run(fn):
        for i in range(0, len(x), a.batch_size):
            fn(x[i : i + a.batch_size], y[i : i + a.batch_size])

    run(atk), run(direct)  # warm-up
    t_adv, t_dir = [], []
    for _ in range(a.repeats):
        t_adv.append(timed(lambda: run(atk), 1))
        t_dir.append(timed(lambda: run(direct), 1))
    ta, td = statistics.median(t_adv), statistics.median(t_dir)
    print(f"[pgd] advkit {ta:.3f}s  torchattacks {td:.3f}s  ratio {ta / td:.3f}")

    if not a.skip_aa:
        robust = advkit.load_model(a.robust_model)
        few = advkit.load_dataset("fmnist-mini", "test", n=a.n_aa)

        def ev(attacks):
            t0 = time.perf_counter()
            r = evaluate(robust, few, attacks, eps=eps, batch_size=a.batch_size, quiet=True)
            return time.perf_counter() - t0, r

        t_aa, r_aa = ev(["aa"])
        t_casc, r_casc = ev(["pgd", "cw", "aa"])
        print(f"[cascade] {a.robust_model}, n {a.n_aa}: pgd,cw,aa {t_casc:.1f}s (worst {100 * r_casc.robust_accuracy:.1f}%)  "
              f"aa alone {t_aa:.1f}s ({100 * r_aa.robust_accuracy:.1f}%)  ratio {t_casc / t_aa:.3f}")

    if not a.skip_torchrun:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryDirectory() as d:
            args = ["-m", "advkit", "--quiet", "eval", "--model", a.model, "--attacks", "pgd", "-n", str(a.n), "--batch-size", "50"]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args, "--out", f"{d}/one"], check=True, env=env, capture_output=True)
            t1 = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args, "--out", f"{d}/two"],
                           check=True, env=env, capture_output=True)
            t2 = time.perf_counter() - t0
            same = open(f"{d}/one/results.csv").read() == open(f"{d}/two/results.csv").read()
        print(f"[torchrun] 1 process {t1:.1f}s  2 processes {t2:.1f}s  speed-up {t1 / t2:.2f}x  identical results: {same}")


def aa_overhead(a):
    """advkit.evaluate(..., ["aa"]) against pyautoattack's run_standard_evaluation on the same points and batches."""
    import pyautoattack

    import advkit

    model = advkit.load_model(a.robust_model)
    data = advkit.load_dataset("fmnist-mini", "test", n=a.n_overhead)
    x, y = data.tensors()

    def ours():
        r = advkit.evaluate(model, data, ["aa"], eps=0.1, batch_size=a.batch_size, quiet=True)
        return r.robust_accuracy

    def theirs():
        adv = pyautoattack.AutoAttack(model, norm="Linf", eps=0.1, version="standard", seed=0, device="cpu")
        adv.logger.disabled = True
        x_adv, y_adv = adv.run_standard_evaluation(x.clone(), y.clone(), batch_size=a.batch_size)
        return float((y_adv == y).float().mean())

    t_ours, t_theirs = [], []
    for _ in range(a.repeats):  # alternated, so that drift in the machine's load falls on both
        t0 = time.perf_counter()
        acc_ours = ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        acc_theirs = theirs()
        t_theirs.append(time.perf_counter() - t0)
    to, tt = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"[aa overhead] {a.robust_model}, n {a.n_overhead}, batch {a.batch_size}: advkit {to:.1f}s "
          f"({100 * acc_ours:.1f}%)  pyautoattack {tt:.1f}s ({100 * acc_theirs:.1f}%)  ratio {to / tt:.3f}  "
          f"(each of {a.repeats} alternated runs: {[round(v, 1) for v in t_ours]} vs {[round(v, 1) for v in t_theirs]})")


if __name__ == "__main__":
    main()
