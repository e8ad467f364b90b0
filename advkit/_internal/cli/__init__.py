"""The ``advkit`` command line: ``list``, ``eval``, ``train``, ``explain`` and plugin commands.

A user error prints one line on stderr and exits with code 2; ``--debug``
shows the traceback instead. The root options are resolved once into a
:class:`RunOptions` (``ctx.obj``): a plugin command takes it with
``@click.pass_obj`` and reads ``opts.device`` (already checked, ``auto``
resolved), ``opts.seed``, ``opts.quiet`` and ``opts.verbose``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import click

from advkit import __version__
from advkit._internal.distributed import resolve_device
from advkit._internal.errors import ThreatViolation, UserError


class RunOptions:
    """The root options of one ``advkit`` invocation, as commands (plugin commands too) read them."""

    def __init__(self, device: str = "auto", seed: int = 0, verbose: int = 0, quiet: bool = False, debug: bool = False):
        self._device = device
        self.seed, self.verbose, self.quiet, self.debug = seed, verbose, quiet, debug
        self._resolved: str | None = None

    @property
    def device(self) -> str:
        """``--device`` checked against this machine (``auto``: CUDA when available), resolved on first use."""
        if self._resolved is None:
            self._resolved = resolve_device(self._device)
        return self._resolved

    @property
    def device_name(self) -> str:
        """``--device`` as given (the engines resolve it)."""
        return self._device

    @property
    def command(self) -> str:
        """The command line as typed, for reports."""
        return " ".join(["advkit", *sys.argv[1:]])


class AdvkitGroup(click.Group):
    """Turns user errors into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, ThreatViolation) as exc:
            if getattr(ctx.obj, "debug", False) or os.environ.get("ADVKIT_DEBUG"):
                raise
            kind = "error" if isinstance(exc, UserError) else "threat-model violation"
            click.echo(f"advkit: {kind}: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("advkit: interrupted", err=True)
            ctx.exit(130)

    def add_command(self, cmd, name=None):
        """Every command (plugin commands too) also takes the root options after its name."""
        if isinstance(cmd, click.Command) and not getattr(cmd, "_advkit_root_options", False):
            cmd.params += root_options()
            cmd._advkit_root_options = True
        super().add_command(cmd, name)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            from advkit._internal.errors import closest

            name = args[0] if args else ""
            hits = closest(name, self.list_commands(ctx))
            hint = f"; did you mean {hits[0]!r}?" if hits else ""
            raise click.UsageError(f"no such command {name!r}{hint}") from None


def _warning_line(message, category, filename, lineno, file=None, line=None):
    click.echo(f"advkit: warning: {message}", err=True)


def _set_root(ctx, param, value):
    """A root option given after the command (or in its ``--config``) overrides the one before it."""
    opts = ctx.find_object(RunOptions)
    if opts is None or value in (None, False, 0):
        return
    if param.name == "device":
        opts._device, opts._resolved = value, None
    elif param.name == "seed":
        from advkit._internal.seeds import checked_seed

        opts.seed = checked_seed(value)
    elif param.name == "verbose":
        opts.verbose += value
    else:
        setattr(opts, param.name, True)
        if param.name == "debug":
            warnings.showwarning = _SHOW_WARNING


_SHOW_WARNING = warnings.showwarning


def root_options() -> list[click.Option]:
    """``--device``, ``--seed``, ``-v``, ``-q`` and ``--debug`` as options of a command."""
    kw = {"expose_value": False, "callback": _set_root}
    return [click.Option(["--device"], default=None, help="As before the command: auto, cpu, cuda or cuda:N.", **kw),
            click.Option(["--seed"], default=None, help="As before the command: seed for every random choice.", **kw),
            click.Option(["-v", "--verbose"], count=True, help="As before the command: more output.", **kw),
            click.Option(["-q", "--quiet"], is_flag=True, help="As before the command: no progress bars.", **kw),
            click.Option(["--debug"], is_flag=True, help="As before the command: show tracebacks.", **kw)]


@click.group(cls=AdvkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="advkit")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--seed", default="0", show_default=True, help="Seed for every random choice.")
@click.option("-v", "--verbose", count=True, help="More output: each attack's implementation and settings, per-epoch notes.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx, device, seed, verbose, quiet, debug):
    """Evaluate, train and explain adversarially robust image classifiers.

    The options above may also follow the command (advkit eval --seed 1).
    """
    from advkit._internal.seeds import checked_seed

    ctx.obj = RunOptions(device, checked_seed(seed), verbose, quiet, debug)
    if not debug:
        warnings.showwarning = _warning_line
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


LIST_KINDS = ("attacks", "defenses", "explainers", "backbones", "datasets", "checks", "plugins")


@cli.command("list")
@click.argument("kind", required=False, metavar="[KIND]")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(kind, pattern, as_json):
    """Show registered attacks, defenses, explainers, backbones, datasets and plugins.

    KIND is one of attacks, defenses, explainers, backbones, datasets, plugins;
    PATTERN keeps the names matching it with shell wildcards ('*resnet*', 'ta.*';
    quote it). A lone PATTERN searches every kind.
    """
    from advkit._internal.errors import closest
    from advkit._internal.listing import format_listing, list_components

    if kind is not None and kind.lower().rstrip("s") + "s" in LIST_KINDS:
        kind = kind.lower().rstrip("s") + "s"
    elif kind is not None and pattern is None and (set(kind) & set("*?[") or not closest(kind, list(LIST_KINDS))):
        kind, pattern = None, kind
    elif kind is not None:
        hits = closest(kind, list(LIST_KINDS))
        hint = f"; did you mean {hits[0]!r}?" if hits else ""
        raise UserError(f"unknown kind {kind!r}{hint} (one of {', '.join(LIST_KINDS)}; a pattern needs a wildcard)")
    listing = list_components(kind, pattern)
    if pattern is not None and kind is None:
        listing = {k: v for k, v in listing.items() if v}
        if not listing:
            raise UserError(f"nothing registered matches {pattern!r} (see 'advkit list')")
    if as_json:
        click.echo(json.dumps(listing, indent=2, default=str))
    else:
        click.echo(format_listing(listing), nl=False)


@cli.command("eval")
@click.option("--model", "-m", default=None, help="Backbone name, timm/NAME, checkpoint path or module:factory "
              "[default: the model a plugin declares as the default].")
@click.option("--weights", default=None, help="Local weights file for the backbone (.safetensors or .pth).")
@click.option("--dataset", "-d", default=None, help="Dataset name or image folder [default: the declared default].")
@click.option("--data-dir", default=None, help="Where torchvision datasets live.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--attacks", "-a", default=None, metavar="NAME[:key=value,...],...",
              help="Comma-separated attacks, each with optional parameters: pgd:steps=20,alpha=0.01,aa; none: clean "
                   "accuracy only [default: the suite plugins declare as the default, see 'advkit list attacks'].")
@click.option("--norm", default="Linf", show_default=True, help="Threat norm: Linf, L2 or L1.")
@click.option("--eps", default=None, help="Budget, e.g. 8/255 or 0.031 (default: the dataset's usual one).")
@click.option("--attack-opt", "attack_opts", multiple=True, metavar="NAME.PARAM=VALUE", help="Per-attack option, repeatable (same as NAME:PARAM=VALUE in --attacks).")
@click.option("-n", "--n", "n", default=None, type=int, help="Number of test points (the first n) [default: all]; under torchrun write -n.")
@click.option("--batch-size", default="250", show_default=True, metavar="N|auto",
              help="Points per batch; auto: the largest that fits the GPU, or on a CPU the fastest measured.")
@click.option("--independent", is_flag=True, help="Run every attack on every clean-correct point (also reports the cascade).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Write reports and per-sample results here; re-running resumes.")
@click.option("--eps-sweep", default=None, help="Comma-separated budgets for a robustness curve, e.g. 1/255,2/255,4/255,8/255.")
@click.option("--audit", is_flag=False, flag_value="all", default=None, metavar="[CHECKS][:n=N]",
              help="Audit the evaluation on a seeded sample of clean-correct points (100; all:n=200 for more): "
                   "indicators of attack failure, AutoAttack's checks, gradient masking (see advkit list checks).")
@click.option("--adaptive", is_flag=False, flag_value="auto", default=None, metavar="[REMEDIES]",
              help="Adaptive attacks on the points left robust: the remedies of the checks --audit flags "
                   "(auto), or named: logits, rescale, margin, bpda, transfer, eot, more-iterations, more-restarts "
                   "(docs/audit.md).")
@click.option("--surrogate", default=None, metavar="MODEL",
              help="A differentiable model approximating the evaluated one, for --adaptive bpda and transfer and "
                   "the audit checks that attack a surrogate (docs/audit.md).")
@click.option("--confirm", default=None, metavar="NAME[:fraction=F,...]",
              help="Run this attack (e.g. aa) on a seeded sample of the points left unbroken (fraction 0.1) and "
                   "report the estimated gap with a 95 % interval.")
@click.option("--eot", default=20, show_default=True, type=int, help="EOT samples for gradient attacks on stochastic models.")
@click.option("--draws", default=None, type=int,
              help="Forward passes that judge each point of a stochastic model, each its own random draw "
                   "[default: 10].")
@click.option("--save-adv", default=0, show_default=True, type=int, metavar="N",
              help="Save the adversarial examples of the first N points every attack ran on, broken or not "
                   "(OUT/adv/*.safetensors and a picture).")
@click.pass_obj
def eval_cmd(opts, attacks, eps_sweep, **kw):
    """Evaluate a model under a suite of attacks (clean, per-attack and worst-case accuracy)."""
    from advkit._internal.cli.evaluate import run_eval

    run_eval(opts, attacks=attacks, eps_sweep=eps_sweep, **kw)


from advkit._internal.cli.train import config_option as _train_config  # noqa: E402 (light: click only)


@cli.command("train")
@_train_config
@click.option("--model", "-m", default=None, help="Backbone name, timm/NAME, checkpoint or module:factory "
              "[default: the architecture a plugin declares for training].")
@click.option("--weights", default=None, help="Start from these local weights (.safetensors or .pth).")
@click.option("--dataset", "-d", default=None, help="[default: the dataset a plugin declares as default]")
@click.option("--data-dir", default=None)
@click.option("--defense", "defenses", multiple=True, metavar="NAME[:key=value,...]", help="Repeatable; composed at the model/data/adversary/objective points.")
@click.option("--epochs", default=10, show_default=True, type=int)
@click.option("--batch-size", default=None, type=int, help="[default: the backbone's, else 128]")
@click.option("--lr", default=None, type=float, help="[default: what the backbone declares it trains with, else 0.1]")
@click.option("--optimizer", default=None, help="sgd or adam [default: the backbone's, else sgd].")
@click.option("--momentum", default=None, type=float, help="[default: the backbone's, else 0.9]")
@click.option("--weight-decay", default=None, type=float, help="[default: the backbone's, else 5e-4]")
@click.option("--schedule", default=None, help="multistep, cosine or constant [default: the backbone's, else multistep].")
@click.option("--norm", default="Linf", show_default=True)
@click.option("--eps", default=None, help="Training and validation budget (default: the dataset's usual one).")
@click.option("--augment/--no-augment", default=True, show_default=True, help="The dataset's usual augmentation (crop + flip for CIFAR-like data).")
@click.option("--n-train", default=None, type=int, help="Use the first N training images.")
@click.option("--n-val", default=500, show_default=True, type=int,
              help="Validation images, evaluated each epoch; they choose best.safetensors.")
@click.option("--val-from", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="train: held out of the training split with the seed (indices in config.json); "
                   "test: the test split's first --n-val (model selection on test data).")
@click.option("--val-attack", default=None, help="Attack for the per-epoch robust accuracy ('none' to skip) "
              "[default: the attack a plugin declares for validation].")
@click.option("--val-eot", default=5, show_default=True, type=int,
              help="EOT samples of the validation attack on a stochastic model (a selection signal; advkit eval "
                   "judges with --eot 20).")
@click.option("--amp", default="off", show_default=True, help="Mixed precision of the update: off, bf16 or fp16 (CUDA only); validation stays fp32.")
@click.option("--amp-adversary", is_flag=True, help="Run the training adversary under --amp too (default fp32: reduced precision can mask gradients).")
@click.option("--channels-last/--no-channels-last", default=None, help="Memory format of model and batches [default: channels_last on CUDA for images].")
@click.option("--out", default="runs/train", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run in OUT (same settings) from its last finished epoch.")
@click.option("--overwrite", is_flag=True, help="Replace a run that OUT already holds.")
@click.pass_obj
def train_cmd(opts, **kw):
    """Train a model, optionally with defenses (PGD-AT, TRADES, MART, CSA, PART, LWTA, ...)."""
    from advkit._internal.cli.train import run_train

    run_train(opts, **kw)


@cli.command("explain")
@click.option("--method", required=True, help="Explainer name (see 'advkit list explainers').")
@click.option("--model", "-m", default=None, help="[default: the model a plugin declares as default]")
@click.option("--weights", default=None)
@click.option("--compare", default=None, help="A second model, shown side by side.")
@click.option("--dataset", "-d", default=None, help="[default: the dataset the model was trained on, else the default]")
@click.option("--data-dir", default=None)
@click.option("-n", "--n", "n", default=16, show_default=True, type=int, help="Number of images (first n).")
@click.option("--opt", "opts_list", multiple=True, metavar="PARAM=VALUE", help="Explainer parameter, repeatable.")
@click.option("--out", default="runs/explain", show_default=True, type=click.Path(file_okay=False))
@click.pass_obj
def explain_cmd(opts, **kw):
    """Explain a model's predictions and write arrays, figures and a JSON summary."""
    from advkit._internal.cli.explain import run_explain

    run_explain(opts, **kw)


from advkit._internal.cli.report import report_cmd  # noqa: E402 (a command in its own module; imports only click)

cli.add_command(report_cmd)

_commands_loaded = False


def load_commands() -> click.Group:
    """The CLI group with the plugins' commands added (once)."""
    global _commands_loaded
    if not _commands_loaded:
        from advkit._internal.plugins import register_commands

        register_commands(cli)
        _commands_loaded = True
    return cli


def main(argv=None):
    """Console-script entry point."""
    return load_commands().main(args=argv, prog_name="advkit")
