"""``advkit csa-bank``: build (or find in its cache) the NFC bank of a pretrained model."""

from __future__ import annotations

import click


def add_command(cli: click.Group) -> None:
    @cli.command("csa-bank")
    @click.option("--model", "-m", default="smallcnn-fmnist", show_default=True, help="Pretrained model: name or checkpoint path.")
    @click.option("--weights", default=None, help="Local weights file for the backbone.")
    @click.option("--dataset", "-d", default="fmnist-mini", show_default=True)
    @click.option("--data-dir", default=None)
    @click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]))
    @click.option("--per-class", default=150, show_default=True, type=int, help="Images per class.")
    @click.option("--permutations", default=64, show_default=True, type=int, help="Permutations per image (antithetic pairs count twice).")
    @click.option("--target-se", default=None, type=float, help="Stop an image once its largest standard error is at most this.")
    @click.option("--grid", default=None, help="Player grid, e.g. 14x14 (default: 2x2 frequency blocks).")
    @click.option("--value", default="prob", show_default=True, type=click.Choice(["prob", "logit"]))
    @click.option("--batch-size", default=1024, show_default=True, type=int, help="Forward passes per model call.")
    @click.option("--out", default="runs/csa-bank", show_default=True, type=click.Path(file_okay=False),
                  help="Where the bank is written; re-running finds it, or resumes a partial one.")
    @click.pass_context
    def csa_bank(ctx, model, weights, dataset, data_dir, split, per_class, permutations, target_se, grid, value, batch_size, out):
        """Compute the class-wise NFC bank used by the csa defense (cached, resumable)."""
        from advkit.cli import resolve_device
        from advkit.data import load_dataset
        from advkit.models import load_model
        from advkit_csa.bank import build_bank
        from advkit_csa.grid import parse_grid

        opts = ctx.obj or {}
        device = resolve_device(opts.get("device", "auto"))
        data = load_dataset(dataset, split, data_dir=data_dir)
        info = data.info
        m = load_model(model, num_classes=info.num_classes, input_shape=info.input_shape, mean=info.mean, std=info.std,
                       weights=weights, device=device)
        bank, path = build_bank(m, data, out=out, per_class=per_class, permutations=permutations, target_se=target_se,
                                grid=parse_grid(grid), value=value, batch_size=batch_size, seed=int(opts.get("seed", 0)),
                                progress=not opts.get("quiet", False))
        click.echo(f"csa-bank: {len(bank.labels)} NFC spectra ({per_class} per class) in {path}")
        click.echo(f"use it with: advkit train --dataset {dataset} --defense pgd-at --defense csa:bank={path}")
