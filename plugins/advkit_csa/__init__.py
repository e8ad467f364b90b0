"""CSA (Chen, Ren & Yan, NeurIPS 2022): frequency Shapley values and class-wise NFC augmentation.

- explainer ``freq-shapley``: Shapley values of blocks of the centred DFT
  spectrum (:mod:`advkit_csa.shapley`), PFC/NFC reconstructions;
- defense ``csa``: adds ``alpha`` times the negative-frequency components of a
  same-class image to each training image (:mod:`advkit_csa.defense`);
- command ``advkit csa-bank``: builds the class-wise NFC bank (:mod:`advkit_csa.bank`).

See docs/csa.md.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_explainers(register):
    from advkit_csa.explainer import FreqShapley

    register("freq-shapley", FreqShapley, aliases=("frequency-shapley",))


@hookimpl
def advkit_register_defenses(register):
    from advkit_csa.defense import CSA

    register("csa", CSA, aliases=("class-wise-shapley-augmentation",))


@hookimpl
def advkit_register_commands(cli):
    from advkit_csa.cli import add_command

    add_command(cli)
