"""Stochastic local winner-takes-all activations (Panousis et al., 2021) as a *model* defense.

``--defense lwta`` replaces the backbone's ReLU-family activation modules with
:class:`~advkit_lwta.block.LWTA` blocks of ``U`` competing units. The model
stays random at test time (``stochastic``), so evaluate it adaptively (EOT).
The paper's IBP prior over connections and the KL terms of its ELBO are not
implemented: training uses the objective of whatever other defense is given
(cross-entropy by default, or PGD-AT, TRADES...).
"""

from __future__ import annotations

from advkit import hookimpl
from advkit.defense import Defense
from advkit.errors import UserError


class LWTADefense(Defense):
    """Stochastic LWTA: ReLU-family activations become blocks of U competing units, one sampled winner."""

    stochastic = True

    def __init__(self, U: int = 2, temperature: float = 0.67, test_temperature: float = 0.01,
                 deterministic: bool = False, hard: bool = True, pad: bool = False):
        super().__init__(U=U, temperature=temperature, test_temperature=test_temperature,
                         deterministic=deterministic, hard=hard, pad=pad)
        if int(U) != U or int(U) < 2:
            raise UserError(f"lwta.U must be a whole number >= 2, got {U!r}")
        if not (temperature > 0 and test_temperature > 0):
            raise UserError("lwta temperatures must be > 0")
        self.stochastic = not deterministic

    def transform_model(self, backbone):
        from advkit_lwta.block import LWTA
        from advkit_lwta.transform import replace_activations

        p = self.params
        count = replace_activations(
            backbone,
            lambda where: LWTA(int(p["U"]), p["temperature"], p["test_temperature"], p["deterministic"],
                               p["hard"], p["pad"], where),
        )
        if count == 0:
            raise UserError(f"lwta: {type(backbone).__name__} has no ReLU-family activation modules to replace")
        return backbone


@hookimpl
def advkit_register_defenses(register):
    register("lwta", LWTADefense, aliases=("stochastic-lwta",))
