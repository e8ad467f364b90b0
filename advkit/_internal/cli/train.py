"""``advkit train``: the ``--config`` file, then load the data, the model and the defenses the options name,
train, print a summary.

``--config FILE`` (TOML; YAML when PyYAML is installed; JSON) gives defaults
for ``train``'s options: keys are option names (``batch-size`` or
``batch_size``; ``defense`` takes a list), at the top level or in a
``[train]`` table. Options given on the command line win. The options the
run used, resolved, are saved as ``OUT/config.json`` (itself a valid
``--config`` file).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import click

from advkit._internal import distributed as D
from advkit._internal.errors import UserError


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def read_config(path: str) -> dict:
    """The option table of a TOML, YAML or JSON file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config: file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError(f"--config {p}: reading YAML needs PyYAML (pip install pyyaml); or use TOML") from None
            data = yaml.safe_load(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"--config {p} cannot be read: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise UserError(f"--config {p} must hold a table of option names and values")
    return data


def _apply_config(ctx, param, value):
    if not value:
        return value
    names = {p.name: p for p in ctx.command.params if p.name not in ("config",)}
    aliases = {**{n: n for n in names}, "defense": "defenses"}
    for p in ctx.command.params:
        for opt in p.opts:
            if opt.startswith("--"):
                aliases[opt[2:].replace("-", "_")] = p.name
    defaults = {}
    for key, v in read_config(value).items():
        name = aliases.get(str(key).replace("-", "_"))
        if name is None:
            close = difflib.get_close_matches(str(key), sorted(aliases), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"--config {value}: unknown option {key!r}{hint}")
        defaults[name] = list(v) if names[name].multiple and isinstance(v, (list, tuple)) else \
            ([v] if names[name].multiple else v)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


config_option = click.option(
    "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_apply_config,
    help="TOML (or YAML, JSON) file giving defaults for these options; saved resolved as OUT/config.json.")


def run_train(opts, *, model, weights, dataset, data_dir, defenses, epochs, batch_size, lr, optimizer, momentum,
              weight_decay, schedule, norm, eps, augment, n_train, n_val, val_attack, val_eot, amp, amp_adversary,
              channels_last, out, resume, overwrite):
    """Resolve names, train (the engine checks the numbers), print the best epoch and the checkpoints."""
    import torch

    from advkit._internal.data import load_dataset
    from advkit._internal.defense import create_defense
    from advkit._internal.models import load_model
    from advkit._internal.threat import ThreatModel
    from advkit._internal.training.setup import architecture
    from advkit._internal.training.trainer import train

    config = {k: v for k, v in locals().items() if k not in ("opts", "torch", "load_dataset", "create_defense",
                                                              "load_model", "ThreatModel", "train", "architecture")}
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k not in ("resume", "overwrite")}
    if n_val is not None and n_val < 0:
        raise UserError(f"--n-val must be >= 0, got {n_val}")
    train_data = load_dataset(dataset, "train", data_dir=data_dir, n=n_train)
    val_data = load_dataset(dataset, "test", data_dir=data_dir, n=n_val) if n_val else None
    info = train_data.info
    threat = ThreatModel.parse(norm, eps if eps is not None else info.default_eps)
    config.update(model=architecture(model), dataset=dataset or info.name)  # saved resolved
    torch.manual_seed(opts.seed)
    net = load_model(architecture(model), dataset=info, weights=weights, device=opts.device,
                     context={"dataset": info.name, "norm": norm})
    defs = [create_defense(spec) for spec in defenses]
    result = train(
        net, train_data, defenses=defs, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        momentum=momentum, weight_decay=weight_decay, schedule=schedule, threat=threat, augment=augment,
        val_data=val_data, val_attack=val_attack, val_eot=val_eot, amp=amp, amp_adversary=amp_adversary,
        channels_last=channels_last, out=out, resume=resume, overwrite=overwrite,
        config=config, seed=opts.seed, device=opts.device, quiet=opts.quiet,
        command=opts.command,
    )
    if D.is_main():
        _summary(result, net, info, train_data, threat, defs)
    return result


def _summary(result, net, info, train_data, threat, defs) -> None:
    names = ", ".join(d.name for d in defs) or "none (standard training)"
    click.echo(f"trained {net.arch} on {info.name} ({len(train_data)} images, {threat}); defenses: {names}")
    b = result.best
    if b is not None and b.get("val_clean") is None:
        click.echo(f"best epoch {b['epoch']}: train loss {b['train_loss']:.4f} (no validation)")
    elif b is not None:
        line = f"best epoch {b['epoch']}: val clean {_pct(b['val_clean'])}"
        if b.get("val_robust") is not None:
            adaptive = f" ({b['val_adaptive']})" if b.get("val_adaptive") else ""
            line += f", val {b['val_attack']}{adaptive} {_pct(b['val_robust'])}"
        click.echo(line)
    if result.out is not None:
        out = result.out
        click.echo(f"checkpoints: {out / 'best.safetensors'} (best), {out / 'last.safetensors'} (last); "
                   f"curves: {out / 'curves.png'}, metrics: {out / 'metrics.csv'}")
