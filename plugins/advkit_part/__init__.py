"""PART (Zhang et al., ICML 2024): pixel-reweighted adversarial training.

- defense ``part`` (*adversary* point): PGD under a per-pixel budget, eps on
  the pixels a class activation map marks as important and eps_low elsewhere
  (:mod:`advkit_part.defense`); with ``trades`` it is PART-T, with ``mart``
  PART-M;
- explainer ``part-map``: the budget maps and CAMs of a model's images
  (:mod:`advkit_part.explainer`).

See docs/part.md.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_defenses(register):
    from advkit_part.defense import PART

    register("part", PART, aliases=("pixel-reweighted",))


@hookimpl
def advkit_register_explainers(register):
    from advkit_part.explainer import part_map

    register("part-map", part_map, aliases=("part-eps-map",))
