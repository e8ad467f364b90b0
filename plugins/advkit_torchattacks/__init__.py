"""advkit plugin: the attacks of torchattacks.

Registers curated short names with the field's standard defaults (``pgd``,
``fgsm``, ``cw``, ``apgd``, ...) and every attack class torchattacks exports as
``ta.<classname>`` (``ta.pgd``, ``ta.vanila``, ``ta.onepixel``, ...) through one
generic adapter that maps the threat model onto the class's own parameters.
torchattacks is imported only when an attack is built.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_attacks(register):
    from advkit_torchattacks.adapter import factory_for
    from advkit_torchattacks.catalog import SPECS
    from advkit_torchattacks.curated import CURATED

    for name, factory, aliases, capabilities, ranges in CURATED:
        register(name, factory, aliases=aliases, ranges=ranges, library="torchattacks", **capabilities)
    for spec in SPECS:
        register(f"ta.{spec.cls.lower()}", factory_for(spec), summary=spec.summary,
                 minimum_norm=spec.minimum_norm, black_box=spec.black_box,
                 keeps_best=spec.keeps_best, library="torchattacks")
