"""Benchmark of the frequency Shapley estimators behind CSA (run by hand; prints ratios measured in one run).

    python benchmarks/bench_shapley.py                 # all four parts
    python benchmarks/bench_shapley.py --part quality  # or throughput, variance, bank

(i)   throughput: forward passes per second of the permutation estimator
      against the model's raw forward at the same batch size, measured
      alternately;
(ii)  variance: standard error against forward passes, antithetic pairs +
      control variate against plain permutation sampling, on the bundled
      SmallCNN (fmnist-mini, 14x14 players);
(iii) quality: bank quality (weighted NFC disagreement with the stored
      reference games, :mod:`advkit_csa.quality`) against forward passes for
      every estimator, and the passes each needs to reach the chosen bank
      quality (benchmarks/csa_quality.py);
(iv)  bank: the default ``smallcnn-fmnist`` bank on ``fmnist-mini`` (150 images
      per class, gradient estimator) built and timed, its quality on the
      reference games (which are among its images), and the forward passes
      and measured CPU rate of a CIFAR ResNet-18 bank.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import advkit
from advkit_csa.shapley import frequency_shapley


def chunk_size(p: int, batch_size: int = 1024, per_unit: int = 2) -> tuple[int, int]:
    """(units per model call, forward batch) the estimator uses for ``p`` players."""
    units = max(1, batch_size // ((p - 1) * per_unit))
    return units, units * per_unit * (p - 1)


def throughput(name: str, reps: int, permutations: int, raw_batches: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    m = advkit.load_model(name) if name != "resnet18-cifar" else advkit.load_model(name, input_shape=(3, 32, 32))
    shape = m.input_shape
    p = (shape[1] // 2) * (shape[2] // 2) - 1
    units, batch = chunk_size(p)
    x = torch.rand(1, *shape)
    y = torch.zeros(1, dtype=torch.long)
    xb = torch.rand(batch, *shape)
    ratios, raws, ests, shares = [], [], [], []
    with torch.inference_mode():
        m(xb[:8])
    for _ in range(reps):
        with torch.inference_mode():
            t = time.perf_counter()
            for _ in range(raw_batches):
                m(xb)
            raw = raw_batches * batch / (time.perf_counter() - t)
        t = time.perf_counter()
        r = frequency_shapley(m, x, y, permutations=permutations, progress=False, seed=seed)
        est = int(r.passes.sum()) / (time.perf_counter() - t)
        ratios.append(est / raw)
        raws.append(raw)
        ests.append(est)
        shares.append(r.timing["forward_s"] / r.timing["total_s"])
    return {"model": name, "input": list(shape), "players": p, "batch": batch, "permutations": permutations,
            "raw": statistics.median(raws),
            "estimator": statistics.median(ests), "ratio": statistics.median(ratios), "ratios": ratios,
            "forward_share": statistics.median(shares)}


def variance(images: int, budgets: list[int], plain_budget: int) -> dict:
    m = advkit.load_model("smallcnn-fmnist")
    x, y = advkit.load_dataset("fmnist-mini", "test", n=images).tensors()
    rows = []
    ours = {}
    for k in budgets:
        r = frequency_shapley(m, x, y, permutations=k, progress=False, seed=1)
        ours[k] = r
        rows.append(("antithetic + control variate", k, r))
    anti = frequency_shapley(m, x, y, permutations=plain_budget, control_variate=False, progress=False, seed=2)
    rows.append(("antithetic only", plain_budget, anti))
    plain = frequency_shapley(m, x, y, permutations=plain_budget, antithetic=False, control_variate=False, progress=False, seed=3)
    rows.append(("plain permutations", plain_budget, plain))
    ref = ours[plain_budget] if plain_budget in ours else ours[max(budgets)]

    def per_pass(r, reduce):  # variance x passes, per image
        v = r.stderr.double() ** 2
        return (reduce(v) * r.passes.double())

    mean_ratio = per_pass(plain, lambda v: v.mean(1)) / per_pass(ref, lambda v: v.mean(1))
    max_ratio = per_pass(plain, lambda v: v.max(1).values) / per_pass(ref, lambda v: v.max(1).values)
    anti_ratio = per_pass(plain, lambda v: v.mean(1)) / per_pass(anti, lambda v: v.mean(1))
    z = (ref.values - plain.values) / (ref.stderr ** 2 + plain.stderr ** 2).sqrt()
    return {"rows": rows, "mean_ratio": mean_ratio, "max_ratio": max_ratio, "anti_ratio": anti_ratio,
            "z_std": float(z.std()), "v_full": ref.v_full, "v_empty": ref.v_empty,
            "gap": max(float(r.efficiency_gap().abs().max()) for _, _, r in rows)}


def bank_default(per_class: int, batch_size: int | None) -> dict:
    """Build the default smallcnn-fmnist bank in a temporary directory; time it and score it on the reference games."""
    import tempfile

    from csa_quality import REFERENCE

    from advkit_csa.bank import build_bank
    from advkit_csa.quality import ReferenceGames

    m = advkit.load_model("smallcnn-fmnist")
    data = advkit.load_dataset("fmnist-mini", "train")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        bank, _ = build_bank(m, data, out=tmp, per_class=per_class, batch_size=batch_size, progress=True)
        seconds = time.perf_counter() - t
    ref = ReferenceGames.load(REFERENCE)
    rows = {int(i): k for k, i in enumerate(bank.indices.tolist())}
    have = [k for k, i in enumerate(ref.indices.tolist()) if int(i) in rows]
    out = {"images": len(bank.labels), "seconds": seconds, "passes": int(bank.passes.sum()), "scored": len(have)}
    if have:
        from advkit_csa.players import FrequencyPlayers

        sub = ref.subset(have)
        values = bank.values[[rows[int(i)] for i in sub.indices.tolist()]]
        q = sub.score(values, FrequencyPlayers((28, 28)))
        out.update(disagreement=float(q["disagreement"].mean()), p_relerr=float(q["p_relerr"].mean()))
    return out


def resnet_rate(pairs: int = 8) -> dict:
    """Measured CPU rate of the gradient estimator on a CIFAR-sized ResNet-18 (random weights), in forward-pass equivalents."""
    from advkit_csa.linearized import gradient_shapley

    m = advkit.load_model("resnet18-cifar", input_shape=(3, 32, 32))
    x, y = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.zeros(1, dtype=torch.long)
    gradient_shapley(m, x, y, pairs=2, progress=False)  # warm-up
    t = time.perf_counter()
    r = gradient_shapley(m, x, y, pairs=pairs, progress=False)
    seconds = time.perf_counter() - t
    exact = (int(r.passes[0]) - 2) // (2 * pairs) - 3
    return {"players": r.players.num_players, "rate": int(r.passes[0]) / seconds, "gradients_per_s": r.timing["gradients"] / seconds,
            "exact": exact}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "throughput", "variance", "quality", "bank"], default="all")
    ap.add_argument("--per-class", type=int, default=150, help="bank part: images per class")
    ap.add_argument("--batch-size", type=int, default=None, help="bank part: coalition images per model call")
    ap.add_argument("--reps", type=int, default=3, help="alternating raw/estimator measurements per model")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-resnet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    tp = {}
    if args.part in ("all", "throughput"):
        print("\n(i) forward passes per second, estimator vs raw model at the same batch size")
        for name in ["smallcnn-fmnist"] + ([] if args.skip_resnet else ["resnet18-cifar"]):
            small = name == "smallcnn-fmnist"
            t = throughput(name, args.reps if small else 2, 64 if small else 16, 4 if small else 1)
            tp[name] = t
            print(f"  {name:16s} input {t['input']}, {t['players']} players, batch {t['batch']}, one image x "
                  f"{t['permutations']} permutations: raw {t['raw']:.0f}/s, "
                  f"estimator {t['estimator']:.0f}/s, ratio {t['ratio']:.3f} (per rep: "
                  f"{', '.join(f'{r:.3f}' for r in t['ratios'])}); {100 * t['forward_share']:.1f}% of the estimator's time "
                  f"inside the model", flush=True)
    if args.part in ("all", "variance"):
        print(f"\n(ii) standard error vs forward passes (smallcnn-fmnist, 14x14 grid = 195 players, {args.images} test images)")
        v = variance(args.images, [16, 32, 64], 64)
        for label, k, r in v["rows"]:
            print(f"  {label:30s} {k:4d} permutations, {int(r.passes[0]):6d} passes/image: mean SE {float(r.stderr.mean()):.2e}, "
                  f"largest SE {float(r.stderr.max(1).values.mean()):.2e} (mean over images)")
        fmt = lambda t: ", ".join(f"{float(a):.1f}" for a in t)  # noqa: E731
        print(f"  passes plain needs for the same error, / ours (per image): mean-SE {fmt(v['mean_ratio'])}; "
              f"largest-SE {fmt(v['max_ratio'])}")
        print(f"  geometric mean over images: mean-SE {math.exp(v['mean_ratio'].log().mean()):.1f}x, largest-SE "
              f"{math.exp(v['max_ratio'].log().mean()):.1f}x; antithetic alone {math.exp(v['anti_ratio'].log().mean()):.1f}x")
        print(f"  v(all) {fmt(v['v_full'])}; v(DC cell only) {fmt(v['v_empty'])}")
        print(f"  calibration: std of (ours - plain) / sqrt(se_ours^2 + se_plain^2) over all players = {v['z_std']:.2f} (1 if "
              f"the standard errors are right); largest efficiency gap {v['gap']:.1e}")
    if args.part in ("all", "quality"):
        from csa_quality import TARGET, summary, sweep

        print(f"\n(iii) bank quality vs forward passes on the reference games (target: mean weighted NFC disagreement {TARGET})")
        summary(sweep(["plain", "permutation", "regression", "kernelshap", "gradient", "gradient+stop"],
                      log=lambda m: print(m, flush=True)))
    if args.part in ("all", "bank"):
        print(f"\n(iv) default NFC bank: smallcnn-fmnist on fmnist-mini, {args.per_class} images per class, gradient estimator")
        b = bank_default(args.per_class, args.batch_size)
        print(f"  measured: {b['images']} images in {b['seconds']:.0f} s ({b['seconds'] / 60:.1f} min), "
              f"{b['passes'] / 1e6:.2f} M forward passes ({b['passes'] / b['images']:.0f} per image)")
        if b["scored"]:
            print(f"  its values on the {b['scored']} reference games among its images: mean disagreement {b['disagreement']:.4f}, "
                  f"p_X error {b['p_relerr']:.3f}")
        if not args.skip_resnet:
            r = resnet_rate()
            p = r["players"]
            old = 1500 * (2 + 64 * (p - 1))
            print(f"  resnet18-cifar ({p} players), measured CPU rate {r['rate']:.0f} passes/s ({r['gradients_per_s']:.0f} "
                  f"gradients/s, {r['exact']} exact player(s) on the test image); 1,500 images, vs {old / 1e6:.1f} M passes "
                  f"({old / r['rate'] / 3600:.0f} h) with 64 permutations:")
            for pairs in (64, 256, 512):  # the stop rule's least, a typical image's, its most
                passes = 1500 * (2 + 2 * pairs * (3 + r["exact"]))
                print(f"    {pairs:3d} pairs per image: {passes / 1e6:.2f} M forward passes, {passes / r['rate'] / 3600:.1f} h on this CPU")


if __name__ == "__main__":
    sys.exit(main())
