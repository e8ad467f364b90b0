"""GPU throughput and overhead of advkit on a CIFAR ResNet-18: PGD evaluation, AutoAttack, a PGD-AT epoch.

Each part times advkit against the same work written by hand (or the library
called directly) in the same run, alternating, and prints the ratio (target
<= 1.05) and images per second:

1. PGD-10 (Linf 8/255): ``advkit.create_attack("pgd")`` vs ``torchattacks.PGD``;
2. AutoAttack's APGD-CE (100 iterations): advkit's ``aa:attacks=apgd-ce`` vs the
   fra31 code (``autoattack`` or ``pyautoattack``) called directly;
3. one PGD-AT epoch (10 steps of 2/255): ``advkit.train`` vs a hand loop with
   the same augmentation-free batches, both in advkit's default memory format
   (channels_last on CUDA); ``--amp bf16|fp16`` (``--amp-adversary``) runs both
   sides under the same autocast (and GradScaler for fp16).

Weights are random and the data synthetic (CIFAR-shaped): the timings do not
depend on them, and nothing is downloaded. ``--device cpu --quick`` checks the
script on a CPU in a minute.

    python benchmarks/bench_gpu.py                      # on cuda
    python benchmarks/bench_gpu.py --amp bf16                # part 3 in bf16 on both sides
    python benchmarks/bench_gpu.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def alternate(a_fn, b_fn, repeats, device) -> tuple[float, float]:
    """Median seconds of ``a_fn`` and ``b_fn``, run alternately after one warm-up each."""
    a_fn(), b_fn()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a_fn, device))
        tb.append(timed(b_fn, device))
    return statistics.median(ta), statistics.median(tb)


def report(name, t_advkit, t_ref, images):
    print(f"[{name}] advkit {t_advkit:.3f}s ({images / t_advkit:.0f} img/s)  reference {t_ref:.3f}s "
          f"({images / t_ref:.0f} img/s)  ratio {t_advkit / t_ref:.3f}", flush=True)


def part_pgd(model, x, y, a, device):
    import torchattacks

    import advkit

    eps = 8 / 255
    ours = advkit.create_attack("pgd", model, eps=eps, steps=10)
    theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)

    def run(fn):
        return lambda: [fn(x[i:i + a.batch], y[i:i + a.batch]) for i in range(0, len(x), a.batch)]

    report("pgd-10", *alternate(run(ours), run(theirs), a.repeats, device), len(x))


def part_autoattack(model, x, y, a, device):
    import advkit

    eps = 8 / 255
    ours = advkit.create_attack("aa", model, eps=eps, attacks="apgd-ce", batch_size=a.batch)
    try:
        from autoattack import AutoAttack

        ref = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks_to_run=["apgd-ce"], device=device)
        theirs = lambda: ref.run_standard_evaluation(x, y, bs=a.batch)  # noqa: E731
    except ImportError:
        from pyautoattack import AutoAttack

        ref = AutoAttack(model, attacks=["apgd-ce"], device=str(device), eps=eps, norm="Linf", version="custom", seed=0)
        theirs = lambda: ref.run_standard_evaluation(x, y, batch_size=a.batch)  # noqa: E731
    import logging

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    report("apgd-ce", *alternate(lambda: ours(x, y), theirs, max(1, a.repeats // 2), device), len(x))


def part_train(a, device):
    """One PGD-AT epoch, advkit vs a hand loop, in the same precision and memory format on both sides.

    The memory format is advkit's default (channels_last on CUDA), passed to both; with ``--amp`` the
    hand loop puts the same ``torch.autocast`` around the update (and, with ``--amp-adversary``, around
    the PGD) and uses a GradScaler for fp16, as the engine does.
    """
    import contextlib

    import advkit
    from advkit._internal.adversary import pgd
    from advkit._internal.data import DataInfo, ImageData, TensorImages

    n = a.n_train
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    info = DataInfo("synthetic-cifar", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, default_eps="8/255")
    data = ImageData(TensorImages(images, labels), info)
    channels_last = device.type == "cuda"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.amp)

    def autocast(on: bool):
        return torch.autocast(device.type, dtype=dtype) if on and dtype is not None else contextlib.nullcontext()

    def make():
        torch.manual_seed(0)
        return advkit.load_model("resnet18-cifar", num_classes=10, input_shape=(3, 32, 32), mean=info.mean,
                                 std=info.std, device=device)

    def ours():
        advkit.train(make(), data, defenses=["pgd-at:steps=10,step_size=2/255"], epochs=1, batch_size=a.batch_train,
                     lr=0.1, augment=False, val_attack="none", quiet=True, device=str(device), threat="8/255",
                     amp=a.amp, amp_adversary=a.amp_adversary, channels_last=channels_last)

    def hand():
        model = make().to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler(device.type) if a.amp == "fp16" else None
        xs, ys = images.to(device), labels.to(device)
        perm = torch.randperm(n)
        for i in range(0, n, a.batch_train):
            idx = perm[i:i + a.batch_train].to(device)
            xb, yb = xs[idx].contiguous(memory_format=fmt), ys[idx]
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            with autocast(a.amp_adversary):
                x_adv = pgd(model, xb, yb, eps=8 / 255, steps=10, step_size=2 / 255)
            for p in model.parameters():
                p.requires_grad_(True)
            model.train()
            with autocast(True):
                loss = F.cross_entropy(model(x_adv), yb)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

    label = f"pgd-at epoch ({'fp32' if dtype is None else a.amp} update, " \
            f"{a.amp if a.amp_adversary else 'fp32'} adversary, {'channels_last' if channels_last else 'contiguous'})"
    report(label, *alternate(ours, hand, max(1, a.repeats // 2), device), n)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script (e.g. on a CPU)")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"),
                   help="part 3: mixed precision of the update, on both sides (evaluation parts stay fp32)")
    p.add_argument("--amp-adversary", action="store_true", help="part 3: the training PGD under --amp too")
    a = p.parse_args()
    device = torch.device(a.device)
    a.n, a.batch, a.n_train, a.batch_train = (64, 32, 128, 64) if a.quick else (4096, 1024, 10000, 128)
    if a.quick:
        a.repeats = 1
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    import advkit

    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (a.n,), generator=g).to(device)
    model = advkit.load_model("resnet18-cifar", num_classes=10, input_shape=(3, 32, 32), device=device)
    part_pgd(model, x, y, a, device)
    part_autoattack(model, x, y, a, device)
    part_train(a, device)


if __name__ == "__main__":
    main()
