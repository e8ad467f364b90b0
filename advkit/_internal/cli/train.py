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


#: Keys of a saved config.json that record the run rather than set an option.
RECORDS = ("validation",)


def read_config(path: str) -> dict:
    """The option table of a TOML, YAML or JSON file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config: file not found: {p}")
    try:
        text = p.read_text()
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
        said = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"--config {p} cannot be read: {said[:240]}") from None
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
        if key in RECORDS:
            continue  # what a run recorded about itself (config.json), not an option
        name = aliases.get(str(key).replace("-", "_"))
        if name == "config":
            raise UserError(f"--config {value}: a config file cannot name another one ({key!r})")
        if name is None:
            close = difflib.get_close_matches(str(key), sorted(aliases), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"--config {value}: unknown option {key!r}{hint}")
        _check_type(value, key, names[name], v)
        defaults[name] = list(v) if names[name].multiple and isinstance(v, (list, tuple)) else \
            ([v] if names[name].multiple else v)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _check_type(path: str, key, param, value) -> None:
    """A config value of the option's own type: ``epochs = 1.7`` or ``true`` is refused, not read as 1."""
    kind = getattr(param.type, "name", "")
    if kind == "choice":
        kind = "text"
    ok = (value is None or (param.multiple and isinstance(value, (list, tuple, str)))
          or (getattr(param, "is_flag", False) and isinstance(value, bool))
          or (kind == "integer" and isinstance(value, int) and not isinstance(value, bool))
          or (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (kind in ("text", "directory", "path") and isinstance(value, (str, int, float)) and not isinstance(value, bool))
          or (kind == "boolean" and isinstance(value, bool)))
    if not ok:
        want = {"integer": "a whole number", "float": "a number", "boolean": "true or false"}.get(kind, "a string")
        if getattr(param, "is_flag", False):
            want = "true or false"
        raise UserError(f"--config {path}: {key} must be {want}, got {value!r}")


config_option = click.option(
    "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_apply_config,
    help="TOML (or YAML, JSON) file giving defaults for these options; saved resolved as OUT/config.json.")


def run_train(opts, *, model, weights, dataset, data_dir, defenses, epochs, batch_size, lr, optimizer, momentum,
              weight_decay, schedule, norm, eps, augment, n_train, n_val, val_from, val_attack, val_eot, amp, amp_adversary,
              channels_last, out, resume, overwrite):
    """:func:`advkit.train` with the options as given (the engine resolves and checks them); print a summary."""
    args = {k: v for k, v in locals().items() if k != "opts"}
    from advkit._internal.training.trainer import train

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items() if k not in ("resume", "overwrite")}
    config["seed"] = opts.seed
    result = train(model, dataset, defenses=list(defenses), **{k: v for k, v in args.items()
                                                               if k not in ("model", "dataset", "defenses")},
                   config=config, seed=opts.seed, device=opts.device_name, quiet=opts.quiet, command=opts.command)
    if D.is_main():
        _summary(result)
    return result


def _summary(result) -> None:
    names = ", ".join(result.defenses) or "none (standard training)"
    click.echo(f"trained {result.model.arch} on {result.dataset} ({result.n_train} images, {result.threat}); "
               f"defenses: {names}")
    b = result.best
    if b is not None and b.get("val_clean") is None:
        click.echo(f"best epoch {b['epoch']}: train loss {b['train_loss']:.4f} (no validation)")
    elif b is not None:
        line = f"best epoch {b['epoch']}: val clean {_pct(b['val_clean'])}"
        if b.get("val_robust") is not None:
            adaptive = f" ({b['val_adaptive']})" if b.get("val_adaptive") else ""
            line += f", val {b['val_attack']}{adaptive} {_pct(b['val_robust'])}"
        v = result.validation or {}
        where = {"train": "held out of the training split",
                 "test": "the test split's first: model selection on test data"}.get(v.get("from"), "given")
        click.echo(f"{line} (validation: {v.get('n', 0)} images, {where})")
    if result.out is not None:
        out = result.out
        click.echo(f"checkpoints: {out / 'best.safetensors'} (best), {out / 'last.safetensors'} (last); "
                   f"curves: {out / 'curves.png'}, metrics: {out / 'metrics.csv'}")
