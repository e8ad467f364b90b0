"""advkit plugin: the evasion attacks of the Adversarial Robustness Toolbox (ART).

Registers every ART evasion attack that works on a PyTorch image classifier as
``art.<name>`` (``art.pgd``, ``art.carlini-l2``, ``art.hopskipjump``, ...)
through one generic adapter that wraps the model in ART's
``PyTorchClassifier`` and maps the threat model onto the attack's parameters.
ART is imported only when an attack is built.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_attacks(register):
    from advkit_art.adapter import factory_for
    from advkit_art.catalog import SPECS

    for spec in SPECS:
        register(f"art.{spec.name}", factory_for(spec), summary=spec.summary, minimum_norm=spec.minimum_norm,
                 black_box=spec.black_box, keeps_best=spec.keeps_best,
                 library="adversarial-robustness-toolbox")
