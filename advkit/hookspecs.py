"""The advkit plugin contract.

Every attack, defense, explainer, backbone, dataset and audit check that advkit knows comes
from a plugin implementing one of the hooks below, the built-in ones included.
A plugin is a module (or package) named in the ``advkit`` entry-point group::

    # pyproject.toml of a third-party package
    [project.entry-points.advkit]
    myplugin = "advkit_myplugin"

    # advkit_myplugin/__init__.py
    import advkit

    @advkit.hookimpl
    def advkit_register_attacks(register):
        register("noise", make_noise_attack, summary="uniform noise in the eps-ball")

Each ``advkit_register_*`` hook receives a ``register`` callable and is called
once, the first time a registry is used (all registries are filled together,
so a plugin that raises in any hook is skipped in all of them). ``register``
takes::

    register(name, factory, *, aliases=(), summary=None, ranges=None, library=None, **capabilities)

``name`` is case-insensitive (also reachable as ``provider.name``); ``factory``
is a callable whose keyword parameters (with their defaults) are shown by
``advkit list`` and can be set from the command line (``--attack-opt
pgd.steps=20``). ``summary`` defaults to the first line of the factory's
docstring; ``ranges`` maps parameters to :class:`advkit._internal.registry.Range`;
``library`` names the distribution the component wraps (its version is listed);
the capabilities a kind accepts are :data:`advkit._internal.registry.CAPABILITIES`.
docs/plugins.md describes the whole contract with an example for each hook.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("advkit")


@hookspec
def advkit_register_attacks(register):
    """Register adversarial attacks.

    The factory is called as ``factory(model, threat, **params)`` where
    ``model`` is an ``nn.Module`` in eval mode taking images in [0, 1] and
    returning logits, and ``threat`` an :class:`advkit._internal.threat.ThreatModel`.
    It returns a callable ``attack(x, y) -> x_adv`` (the torchattacks
    convention), which may carry ``implementation`` (e.g. ``"torchattacks
    3.5.1 PGD"``) and ``report`` (a dict) for the report, or an
    :class:`advkit._internal.attack.LibraryAttack`. Every call goes through
    :meth:`advkit._internal.attack.Attack.run`: a private copy of the batch, eval mode,
    and verification of ``x_adv`` against the threat model (an attack not
    registered ``minimum_norm=True`` that leaves the ball stops the run).
    Capabilities: ``minimum_norm``, ``black_box``, ``adaptive``, ``reference``.

    Example::

        @hookimpl
        def advkit_register_attacks(register):
            def factory(model, threat, steps: int = 10):
                ...
                return attack
            register("my-pgd", factory, aliases=("mpgd",), ranges={"steps": Range(1)})
    """


@hookspec
def advkit_register_defenses(register):
    """Register training-time defenses.

    The factory is called as ``factory(**params)`` and returns an
    :class:`advkit._internal.defense.Defense`, which contributes at one or more of the
    four points of the training engine: ``model`` (transform the backbone),
    ``data`` (transform a clean batch), ``adversary`` (make the training
    perturbation) and ``objective`` (the loss). ``--defense trades --defense
    lwta`` composes two defenses; two that claim the same point are refused.

    Example::

        @hookimpl
        def advkit_register_defenses(register):
            register("label-smoothing", LabelSmoothing)
    """


@hookspec
def advkit_register_explainers(register):
    """Register explainers.

    The factory is called as ``factory(**params)`` and returns a callable
    ``explain(model, x, y, ctx) -> advkit._internal.explainer.Explanation`` with ``ctx``
    an :class:`advkit._internal.explainer.ExplainContext` (dataset, data_dir, device,
    quiet, seed); the engine writes its arrays (``.npz``), figures (``.png``)
    and a JSON summary.

    Example::

        @hookimpl
        def advkit_register_explainers(register):
            register("saliency", Saliency, summary="plain input gradients")
    """


@hookspec
def advkit_register_backbones(register):
    """Register model architectures (and named pretrained checkpoints).

    The factory is called with the user's parameters plus those of
    ``num_classes``, ``in_chans``, ``input_shape`` (C, H, W) and the context
    (``dataset``, ``norm``) that it accepts as keyword parameters, and returns
    an ``nn.Module`` producing logits from *normalized* inputs; advkit wraps it
    with the normalization of the data, so the model the user sees takes
    images in [0, 1]. A factory may instead return an
    :class:`advkit._internal.models.ImageClassifier` that already carries its
    normalization (a pretrained checkpoint does). Capabilities: ``prefix``
    (a model-name prefix it resolves; the rest arrives as ``name``) and
    ``claims``.

    Example::

        @hookimpl
        def advkit_register_backbones(register):
            register("tiny-mlp", lambda num_classes=10, in_chans=1: make_mlp(...))
    """


@hookspec
def advkit_register_datasets(register):
    """Register datasets.

    The factory is called as ``factory(split, data_dir=None, **params)`` with
    ``split`` ``"train"`` or ``"test"``, and returns a
    :class:`advkit._internal.data.ImageData` (a torch ``Dataset`` of ``(image, label)``
    pairs with images in [0, 1], plus ``num_classes``, ``classes``,
    ``input_shape``, ``mean`` and ``std``). A source that needs files it cannot
    find raises :class:`advkit._internal.errors.UserError` saying where to put them.
    """


@hookspec
def advkit_register_checks(register):
    """Register checks of ``advkit eval --audit``.

    The factory is called as ``factory(**params)`` and returns an
    :class:`advkit._internal.audit.Check`: ``cost(ctx)`` says the most model
    passes it spends (the audit announces the sum before running),
    ``run(ctx)`` returns :func:`advkit._internal.audit.finding` for the seeded
    sample in ``ctx`` (an :class:`advkit._internal.evaluation.audit.AuditContext`).
    The built-in checks (gradient masking after Carlini et al. 2019, the
    indicators of attack failure of Pintor et al. 2022, AutoAttack's checks)
    are registered through this hook too; they run in registration order.

    Example::

        @hookimpl
        def advkit_register_checks(register):
            register("flat-logits", FlatLogits, summary="logits that do not depend on the input")
    """


@hookspec
def advkit_register_commands(cli):
    """Add click commands to the ``advkit`` command group.

    Called once when the command line starts, with the root
    ``click.Group``. A command reads the root options (``opts.device``,
    ``opts.seed``, ``opts.quiet``, ``opts.verbose``, ``opts.command``) from
    the ``RunOptions`` object with ``@click.pass_obj``.

    Example::

        @hookimpl
        def advkit_register_commands(cli):
            @cli.command()
            @click.pass_obj
            def hello(opts):
                click.echo(f"hello from my plugin on {opts.device}")
    """
