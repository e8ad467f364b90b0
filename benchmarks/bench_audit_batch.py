"""What the audit's CPU batch cut costs: Square through EOT on a random zoo model (LWTA + PGD-AT, built by
benchmarks/zoo.py), on the same points at a small and a large batch size, alternating, one thread.

On a CPU the audit cuts its attacks into batches of at most 250,000 declared forward passes so that an
interrupted random-model audit resumes (Square through EOT 20 declares 100,000 per point: 2 points per
batch). This measures the throughput that cut costs, with ``advkit.evaluate`` and a short Square.

    python benchmarks/bench_audit_batch.py [--out runs/zoo-cpu] [--n 20] [--queries 100] [--small 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402


def main() -> None:
    import advkit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/zoo-cpu")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--small", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = zoo.build("lwta", Path(a.out))
    data = advkit.load_dataset("fmnist-mini", split="test", n=a.n)
    times: dict[int, list[float]] = {a.small: [], a.n: []}
    for _ in range(a.rounds):
        for bs in (a.small, a.n):  # alternating
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                advkit.evaluate(model, data, ["square"], eps="0.1", attack_opts={"square": {"n_queries": a.queries}},
                                batch_size=bs, quiet=True)
            times[bs].append(time.perf_counter() - t0)
            print(f"batch {bs}: {times[bs][-1]:.1f} s", flush=True)
    small, large = (sum(v) / len(v) for v in (times[a.small], times[a.n]))
    print(f"mean: batch {a.small} {small:.1f} s, batch {a.n} {large:.1f} s; ratio {small / large:.2f}")


if __name__ == "__main__":
    main()
