"""An example advkit plugin: one component for each of the seven hooks, registered through the ``advkit`` entry point.

- attack ``noise``: best of N uniform random perturbations in the eps-ball;
- defense ``gaussian-augment``: Gaussian noise on the clean batch (the *data* point);
- explainer ``saliency``: absolute input gradient of the target logit;
- backbone ``tinynet``: a two-layer CNN for any input shape;
- dataset ``bars``: synthetic 16x16 images of bars in four orientations, made offline;
- audit check ``constant-outputs``: points whose logits are the same everywhere in their eps-ball;
- command ``advkit example-info``: what this plugin registered, and the run's device and seed.

Only the plugin API (``advkit.plugin``) is imported;
heavy imports (torch) happen inside the factories, so ``advkit --help`` stays fast.
"""

from __future__ import annotations

from advkit.plugin import Range, hookimpl


@hookimpl
def advkit_register_attacks(register):
    from advkit_example.attack import noise_attack

    register("noise", noise_attack, aliases=("random-noise",), black_box=True, ranges={"draws": Range(1)})


@hookimpl
def advkit_register_defenses(register):
    from advkit_example.defense import GaussianAugment

    register("gaussian-augment", GaussianAugment, aliases=("gauss-aug",),
             ranges={"sigma": Range(0, None, lo_open=True), "p": Range(0, 1)})


@hookimpl
def advkit_register_explainers(register):
    from advkit_example.explainer import saliency

    register("saliency", saliency)


@hookimpl
def advkit_register_backbones(register):
    from advkit_example.backbone import tinynet

    register("tinynet", tinynet, ranges={"width": Range(1)})


@hookimpl
def advkit_register_datasets(register):
    from advkit_example.dataset import bars

    register("bars", bars, ranges={"n": Range(1)})


@hookimpl
def advkit_register_checks(register):
    from advkit_example.check import ConstantOutputs

    register("constant-outputs", ConstantOutputs)


@hookimpl
def advkit_register_commands(cli):
    from advkit_example.command import example_info

    cli.add_command(example_info)
