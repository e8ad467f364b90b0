"""The advkit plugin contract.

Every attack, defense, explainer, backbone and dataset that advkit knows comes
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
once, the first time its registry is used. ``register`` takes::

    register(name, factory, *, aliases=(), summary=None)

``name`` is case-insensitive; ``factory`` is a callable whose keyword
parameters (with their defaults) are shown by ``advkit list`` and can be set
from the command line (``--attack-opt pgd.steps=20``). ``summary`` defaults to
the first line of the factory's docstring.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("advkit")


@hookspec
def advkit_register_attacks(register):
    """Register adversarial attacks.

    The factory is called as ``factory(model, threat, **params)`` where
    ``model`` is an ``nn.Module`` in eval mode taking images in [0, 1] and
    returning logits, and ``threat`` an :class:`advkit.threat.ThreatModel`.
    It returns a callable ``attack(x, y) -> x_adv`` (the torchattacks
    convention). The evaluation engine verifies every ``x_adv`` against the
    threat model, so an attack must never step outside it. An attack may set
    the attributes ``implementation`` (e.g. ``"torchattacks 3.5.1 PGD"``) and
    ``black_box`` (bool) for the report.

    Example::

        @hookimpl
        def advkit_register_attacks(register):
            def factory(model, threat, steps: int = 10):
                ...
                return attack
            register("my-pgd", factory, aliases=("mpgd",))
    """


@hookspec
def advkit_register_defenses(register):
    """Register training-time defenses.

    The factory is called as ``factory(**params)`` and returns an
    :class:`advkit.defense.Defense`, which contributes at one or more of the
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
    ``explain(model, x, y) -> advkit.explain.Explanation``; the engine writes
    its arrays (``.npz``), figures (``.png``) and a JSON summary.

    Example::

        @hookimpl
        def advkit_register_explainers(register):
            register("saliency", Saliency, summary="plain input gradients")
    """


@hookspec
def advkit_register_backbones(register):
    """Register model architectures (and named pretrained checkpoints).

    The factory is called as ``factory(num_classes=..., in_chans=...,
    **params)`` and returns an ``nn.Module`` producing logits from
    *normalized* inputs; advkit wraps it with the normalization of the data,
    so the model the user sees takes images in [0, 1]. A factory may instead
    return an :class:`advkit.models.ImageClassifier` that already carries its
    normalization (a pretrained checkpoint does).

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
    :class:`advkit.data.ImageData` (a torch ``Dataset`` of ``(image, label)``
    pairs with images in [0, 1], plus ``num_classes``, ``classes``,
    ``input_shape``, ``mean`` and ``std``). A source that needs files it cannot
    find raises :class:`advkit.errors.UserError` saying where to put them.
    """


@hookspec
def advkit_register_commands(cli):
    """Add click commands to the ``advkit`` command group.

    Called once when the command line starts, with the root
    ``click.Group``.

    Example::

        @hookimpl
        def advkit_register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello from my plugin")
    """
