"""Parametric noise injection (Rakin et al., 2019) as a *model* defense.

``--defense noise-injection`` adds learnable Gaussian noise to the weights of
every convolution and linear layer (:mod:`advkit_noise.pni`), in training and
at test time. The paper trains it with PGD-AT (``--defense pgd-at``); under
clean training alone the noise scales tend to shrink. Only weight noise
(PNI-W) is implemented, not activation noise.
"""

from __future__ import annotations

from advkit.plugin import Defense, Range, UserError, hookimpl


class NoiseInjection(Defense):
    """Parametric noise injection: learnable Gaussian noise on conv/linear weights, on at test time."""

    stochastic = True

    def __init__(self, alpha: float = 0.25, per_channel: bool = False):
        super().__init__(alpha=alpha, per_channel=per_channel)
        if not float(alpha) >= 0:
            raise UserError(f"noise-injection.alpha must be >= 0, got {alpha!r}")

    def transform_model(self, backbone):
        from advkit_noise.pni import inject

        if inject(backbone, float(self.params["alpha"]), bool(self.params["per_channel"])) == 0:
            raise UserError(f"noise-injection: {type(backbone).__name__} has no Conv2d or Linear layer")
        return backbone


@hookimpl
def advkit_register_defenses(register):
    register("noise-injection", NoiseInjection, aliases=("pni",), ranges={"alpha": Range(0, 100)})
