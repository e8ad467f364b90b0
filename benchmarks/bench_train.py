"""Training overhead: one PGD-AT epoch through ``advkit.train`` vs a hand-written loop (target ratio <= 1.05).

Same SmallCNN initialisation, same data, same PGD (Linf eps 0.1, 5 steps of
eps/4 from a uniform random start), same Adam step; no augmentation and no
validation, so both do the same arithmetic. The two are run alternately and
the median of ``--repeats`` epochs is compared (run by hand on an idle machine).

    python benchmarks/bench_train.py [--n-train 2000] [--batch-size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F


def hand_written_epoch(model, x, y, batch_size, eps, steps, opt, generator):
    """The textbook PGD-AT loop (Madry et al.): attack in eval mode, CE on the examples in train mode."""
    order = torch.randperm(len(x), generator=generator)
    alpha = eps / 4
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        delta = (torch.rand(xb.shape, generator=generator) * 2 - 1) * eps
        x_adv = (xb + delta).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), yb), [x_adv])
            with torch.no_grad():
                x_adv = torch.min(torch.max(x_adv + alpha * grad.sign(), xb - eps), xb + eps).clamp(0, 1)
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
        loss = F.cross_entropy(model(x_adv.detach()), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import advkit

    data = advkit.load_dataset("fmnist-mini", "train", n=a.n_train)
    x, y = data.tensors()
    torch.manual_seed(0)
    base = advkit.load_model("smallcnn", input_shape=(1, 28, 28), num_classes=10, mean=(0.286,), std=(0.353,))
    eps = 0.1
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, n_train {a.n_train}, "
          f"batch {a.batch_size}, PGD steps {a.steps}")

    def ours():
        m = copy.deepcopy(base)
        advkit.train(m, data, defenses=[f"pgd-at:steps={a.steps}"], epochs=1, batch_size=a.batch_size,
                     optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine", threat=str(eps),
                     augment=False, val_attack="none", quiet=True)

    def theirs():
        m = copy.deepcopy(base)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        hand_written_epoch(m, x, y, a.batch_size, eps, a.steps, opt, torch.Generator().manual_seed(0))

    ours(), theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(a.repeats):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"[pgd-at epoch] advkit {mo:.2f}s  hand-written {mt:.2f}s  ratio {mo / mt:.3f}")


if __name__ == "__main__":
    main()
