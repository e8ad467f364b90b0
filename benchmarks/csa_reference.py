"""Compute the reference games of the NFC-bank quality metric (run by hand; output is committed).

    python benchmarks/csa_reference.py --per-class 2 --permutations 1024
    python benchmarks/csa_reference.py --model smallcnn-fmnist-at --seed 1   # out-of-sample games (another model, other images)

Draws ``per_class`` training images of every class of ``fmnist-mini`` (or ``--dataset``, e.g.
``--model runs/std/best.safetensors --dataset cifar10 --data-dir DIR`` for CIFAR-sized games) (with
``--seed``, the way a bank draws its images) and estimates their frequency
Shapley values under the bundled ``smallcnn-fmnist`` (or ``--model``) with a high budget of
today's estimator (antithetic pairs, control variate, adaptive focusing). The
images, labels, dataset indices, values and standard errors are written to
``tests/fixtures/csa/reference-MODEL[-seedS].safetensors`` (+ ``.json``), the
fixed games on which every bank estimator is compared
(:mod:`advkit_csa.quality`). Images are computed one at a time and the file is
rewritten after each, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import advkit
from advkit._internal.checkpoint import load_tensors, save_tensors
from advkit._internal.files import atomic_write_json
from advkit_csa.bank import choose_images, dataset_labels, model_fingerprint
from advkit_csa.players import FrequencyPlayers
from advkit_csa.shapley import frequency_shapley

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "csa"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--permutations", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0, help="choice of the images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--model", default="smallcnn-fmnist", help="a bundled model or checkpoint")
    ap.add_argument("--dataset", default="fmnist-mini")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=None, help="default: tests/fixtures/csa/reference-MODEL[-seedS].safetensors")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = FIXTURES / f"reference-{Path(args.model).stem}{f'-seed{args.seed}' if args.seed else ''}.safetensors"
    model = advkit.load_model(args.model)
    data = advkit.load_dataset(args.dataset, "train", data_dir=args.data_dir)
    labels = dataset_labels(data)
    pos = choose_images(labels, data.info.num_classes, args.per_class, args.seed)
    x = torch.stack([data[int(i)][0] for i in pos]).float()
    y = labels[pos]
    grid = FrequencyPlayers(tuple(x.shape[-2:])).grid
    n, p = len(pos), FrequencyPlayers(tuple(x.shape[-2:])).num_players
    t = {"images": x, "labels": y, "indices": pos, "values": torch.zeros(n, p), "stderr": torch.zeros(n, p),
         "v_full": torch.zeros(n), "v_empty": torch.zeros(n), "done": torch.tensor(0)}
    if args.out.is_file():
        old = load_tensors(args.out)
        if torch.equal(old["indices"], pos) and old["values"].shape == (n, p):
            t.update(old)
    meta = {"model": args.model, "model_fingerprint": model_fingerprint(model), "dataset": args.dataset,
            "split": "train", "per_class": args.per_class, "seed": args.seed, "estimator": "freq-shapley (default)",
            "permutations": args.permutations, "value": "prob", "grid": list(grid), "estimator_seed": 12345}
    for i in range(int(t["done"]), n):
        s = time.perf_counter()
        r = frequency_shapley(model, x[i : i + 1], y[i : i + 1], permutations=args.permutations, seed=12345,
                              indices=[int(pos[i])], batch_size=args.batch_size, progress=False)
        t["values"][i], t["stderr"][i] = r.values[0], r.stderr[0]
        t["v_full"][i], t["v_empty"][i] = r.v_full[0], r.v_empty[0]
        t["done"] = torch.tensor(i + 1)
        save_tensors(args.out, t, {"format": "advkit-csa-reference/1"})
        atomic_write_json(args.out.with_suffix(".json"), {**meta, "images": int(i + 1)})
        print(f"image {i + 1}/{n} (index {int(pos[i])}, class {int(y[i])}): {time.perf_counter() - s:.0f} s, "
              f"largest SE {float(r.stderr.max()):.1e}, passes {int(r.passes[0])}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
