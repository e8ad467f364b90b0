"""``advkit eval``: load the dataset and the model the options name, evaluate, print the table."""

from __future__ import annotations

import click

from advkit._internal import distributed as D
from advkit._internal.errors import UserError


def parse_attack_list(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """``"pgd:steps=20,alpha=0.01,aa"`` -> ``(["pgd", "aa"], {"pgd": {"steps": "20", "alpha": "0.01"}})``.

    ``NAME:key=value,...`` inside the comma list: a token with ``=`` and no ``:``
    is one more parameter of the attack before it.
    """
    names: list[str] = []
    opts: dict[str, dict[str, str]] = {}
    for token in (t.strip() for t in (text or "").split(",")):
        if not token:
            continue
        name, colon, first = token.partition(":")
        if not colon and "=" in token:
            if not names:
                raise UserError(f"--attacks {text!r}: {token!r} belongs to no attack (write NAME:{token})")
            name, first = names[-1], token
        elif name.strip():
            names.append(name.strip())
        else:
            raise UserError(f"--attacks {text!r}: {token!r} names no attack")
        if first:
            key, eq, value = first.partition("=")
            if not eq or not key.strip():
                raise UserError(f"--attacks {text!r}: parameters must look like key=value, got {first!r}")
            opts.setdefault(name.strip().lower(), {})[key.strip()] = value.strip()
    return names, opts


def merged_options(spec_opts: dict, attack_opts) -> dict[str, dict[str, str]]:
    """The parameters from ``--attacks NAME:key=value`` and from ``--attack-opt NAME.key=value`` (an alias)."""
    from advkit._internal.registry import parse_options

    out = {k: dict(v) for k, v in spec_opts.items()}
    for name, params in parse_options(attack_opts).items():
        for key, value in params.items():
            if key in out.get(name, {}) and out[name][key] != value:
                raise UserError(f"{name}.{key} is given twice with different values ({out[name][key]} and {value})")
            out.setdefault(name, {})[key] = value
    return out


CPU_BATCH = 250


def largest_batch(model, shape, device, limit: int = 4096) -> int:
    """Half the largest power-of-two batch (from 32) whose forward+backward fits the device's memory.

    The half leaves room for what attacks keep besides the model's activations
    (AutoAttack's restarts and targets, EOT copies).
    """
    import torch

    fits, b = 16, 32
    while b <= limit:
        try:
            x = torch.rand(b, *shape, device=device, requires_grad=True)
            model(x).sum().backward()
            fits = b
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            x = None
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()
        b *= 2
    return max(1, fits // 2)


def resolve_batch_size(text, model, device) -> int:
    """``--batch-size``: a positive number, or ``auto`` (probed on a GPU; 250 on a CPU), said on stderr."""
    if str(text).strip().lower() != "auto":
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--batch-size must be a whole number or auto, got {text!r}") from None
    if not str(device).startswith("cuda"):
        size, how = CPU_BATCH, "on a CPU"
    else:
        size, how = largest_batch(model, tuple(model.input_shape), device), "probed on the GPU"
    if D.is_main():
        click.echo(f"advkit: batch size {size} (auto, {how})", err=True)
    return size


def run_eval(opts, *, model, weights, dataset, data_dir, split, attacks, norm, eps, attack_opts, n, batch_size,
             independent, out, eps_sweep, audit, eot, save_adv, confirm):
    """Resolve names, evaluate (the engine checks every argument), print the table, say where the reports are."""
    from advkit._internal.data import load_dataset
    from advkit._internal.evaluation.engine import evaluate
    from advkit._internal.evaluation.report import markdown
    from advkit._internal.models import load_model
    from advkit._internal.seeds import seed_everything

    names, spec_opts = parse_attack_list(attacks)
    params = merged_options(spec_opts, attack_opts)
    D.init_from_env(opts.device)
    device = D.local_device(opts.device)
    data = load_dataset(dataset, split, data_dir=data_dir)
    info = data.info
    m = load_model(model, dataset=info,
                   weights=weights, device=device, context={"dataset": info.name, "norm": norm})
    if tuple(m.input_shape) != tuple(info.input_shape) or m.num_classes != info.num_classes:
        raise UserError(
            f"model {model!r} expects {m.num_classes} classes of shape {tuple(m.input_shape)}, "
            f"but {dataset!r} has {info.num_classes} classes of shape {tuple(info.input_shape)}"
        )
    batch_size = resolve_batch_size(batch_size, m, device)
    seed_everything(opts.seed)
    meta = {
        "command": opts.command,
        "model": model,
        "model_info": {k: v for k, v in m.info.items()
                       if k in ("checkpoint", "defenses", "stochastic", "epoch", "normalization", "zoo", "plugins")}
        | {"arch": m.arch},
    }
    report = evaluate(
        m, data, names, eps=eps, norm=norm, attack_opts=params, n=n,
        batch_size=batch_size, independent=independent, out=out, eps_sweep=eps_sweep, audit=audit,
        eot=eot, seed=opts.seed, device=device, quiet=opts.quiet, meta=meta, save_adv=save_adv, confirm=confirm,
    )
    if D.is_main():
        if opts.verbose:
            for a in report.attacks:
                click.echo(f"{a.name}: {a.qualified} ({a.package} {a.version}), {a.implementation}; params {a.params}",
                           err=True)
        click.echo(markdown(report, per_class_table=bool(opts.verbose)))
        if out:
            click.echo(f"reports written to {out}/ (report.json, report.md with per-class accuracy, results.csv, "
                       f"per_class.png)")
    D.shutdown()
    return report
