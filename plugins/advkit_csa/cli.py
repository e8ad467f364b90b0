"""``advkit csa-bank``: build (or find in its cache) the NFC bank of a pretrained model."""

from __future__ import annotations

import click


def add_command(cli: click.Group) -> None:
    @cli.command("csa-bank")
    @click.option("--model", "-m", default=None, help="Pretrained model: name or checkpoint path [default: a "
                  "registered checkpoint trained on the dataset without defenses].")
    @click.option("--weights", default=None, help="Local weights file for the backbone.")
    @click.option("--dataset", "-d", default=None, help="Dataset [default: the registered default dataset].")
    @click.option("--data-dir", default=None)
    @click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]))
    @click.option("-n", "--n", "n_images", default=None, type=click.IntRange(min=1),
                  help="Draw the images from the first N of the split (those `advkit train --n-train N` trains on).")
    @click.option("--per-class", default=150, show_default=True, type=int, help="Images per class.")
    @click.option("--estimator", default="gradient", show_default=True, type=click.Choice(["gradient", "permutation"]),
                  help="gradient: linearized values from input gradients (fast, for signs); permutation: sampled permutations.")
    @click.option("--pairs", default=512, show_default=True, type=int, help="gradient: the most coalition pairs per image.")
    @click.option("--target-loss", default=0.003, show_default=True, type=float,
                  help="gradient: stop an image once its expected weighted NFC disagreement is at most this (0: never).")
    @click.option("--permutations", default=64, show_default=True, type=int, help="permutation: permutations per image (antithetic pairs count twice).")
    @click.option("--target-se", default=None, type=float, help="permutation: stop an image once its largest standard error is at most this.")
    @click.option("--grid", default=None, help="Player grid, e.g. 14x14 (default: 2x2 frequency blocks).")
    @click.option("--value", default="prob", show_default=True, type=click.Choice(["prob", "logit"]))
    @click.option("--batch-size", default=None, type=int, help="Coalition images per model call [default: 128 on CPU, 1024 on GPU].")
    @click.option("--chunk", default=32, show_default=True, type=int, help="Images per resumable chunk; under "
                  "torchrun the ranks share the chunks.")
    @click.option("--out", default="runs/csa-bank", show_default=True, type=click.Path(file_okay=False),
                  help="Where the bank is written; re-running finds it, or resumes a partial one.")
    @click.pass_obj
    def csa_bank(opts, model, weights, dataset, data_dir, split, n_images, per_class, estimator, pairs, target_loss, permutations,
                 target_se, grid, value, batch_size, chunk, out):
        """Compute the class-wise NFC bank used by the csa defense (cached, resumable; under torchrun, sharded)."""
        from advkit.plugin import (
            init_distributed,
            is_main,
            load_dataset,
            load_model,
            local_device,
            shutdown_distributed,
        )
        from advkit_csa.bank import build_bank
        from advkit_csa.grid import parse_grid

        init_distributed(opts.device)
        device = local_device(opts.device)  # the root CLI's --device, checked and resolved; this rank's GPU
        data = load_dataset(dataset, split, data_dir=data_dir, n=n_images)
        info = data.info
        m = load_model(_pretrained(model, info.name), dataset=info, weights=weights, device=device)
        bank, path = build_bank(m, data, out=out, per_class=per_class, estimator=estimator,
                                pairs=pairs, target_loss=target_loss or None,
                                permutations=permutations, target_se=target_se, grid=parse_grid(grid), value=value,
                                batch_size=batch_size, chunk=chunk, seed=opts.seed, progress=not opts.quiet)
        if is_main():
            passes = bank.meta.get("forward_passes")
            click.echo(f"csa-bank: {len(bank.labels)} NFC spectra ({per_class} per class) in {path}"
                       + (f" ({passes:,} forward passes)" if passes else ""))
            click.echo(f"use it with: advkit train --dataset {info.name} --defense pgd-at --defense csa:bank={path}")
        shutdown_distributed()


def _pretrained(model, dataset: str) -> str:
    """``--model``, or the registered checkpoint declared trained on ``dataset`` without defenses."""
    from advkit_csa.defense import standard_pretrained

    model = model or standard_pretrained(dataset)
    if model is None:
        raise click.UsageError(f"no registered checkpoint is declared trained on {dataset} without defenses: pass --model")
    return model
