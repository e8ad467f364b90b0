"""Stochastic local winner-takes-all activations (Panousis et al., 2021) as a *model* defense.

``--defense lwta`` replaces the backbone's ReLU-family activation modules with
:class:`~advkit_lwta.block.LWTA` blocks of ``U`` competing units. The model
stays random at test time (``stochastic``), so evaluate it adaptively (EOT).
Activations a backbone calls as functions (``F.relu`` in a ``forward``) are
not modules and cannot be swapped: the defense warns and names them.

The paper's optional IBP prior and the KL terms of its ELBO are not
implemented, on purpose (docs/lwta.md): the prior acts on a Bernoulli
utility indicator per connection of every linear and convolutional layer
(a Bayesian layer, not an activation), and the ELBO's KL terms would have
to be added to the training objective, which in advkit belongs to one
objective defense (cross-entropy by default, or PGD-AT, TRADES, MART...), so
``lwta`` could no longer be combined with them. Training uses that objective.
"""

from __future__ import annotations

import warnings

from advkit.plugin import Defense, UserError, hookimpl


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
        from advkit_lwta.transform import functional_activations, replace_activations

        unreachable = functional_activations(backbone)
        p = self.params
        count = replace_activations(
            backbone,
            lambda where: LWTA(int(p["U"]), p["temperature"], p["test_temperature"], p["deterministic"],
                               p["hard"], p["pad"], where),
        )
        where = "; ".join(unreachable[:3]) + (" ..." if len(unreachable) > 3 else "")
        if count == 0:
            extra = f" (it calls activations as functions: {where}; use nn.ReLU modules)" if unreachable else ""
            raise UserError(f"lwta: {type(backbone).__name__} has no ReLU-family activation modules to replace{extra}")
        if unreachable:
            warnings.warn(f"lwta: replaced {count} activation modules, but functional activations stay as they are: "
                          f"{where}", stacklevel=2)
        return backbone


@hookimpl
def advkit_register_defenses(register):
    register("lwta", LWTADefense, aliases=("stochastic-lwta",))
