"""advkit plugin: the checks of ``advkit eval --audit``.

Three families, each check one registration (docs/audit.md has a section per check):

- AutoAttack's checks on the model's outputs (:mod:`advkit_audit.outputs`): probabilities instead of
  logits, outputs that depend on the batch, too few classes;
- the indicators of attack failure of Pintor et al. (NeurIPS 2022), computed per point from traced
  runs of the white-box reference attack, and from a transfer attack on ``--surrogate``
  (:mod:`advkit_audit.indicators`);
- the gradient-masking checks of Carlini et al. (2019) (:mod:`advkit_audit.carlini`).
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_checks(register):
    from advkit_audit import carlini, indicators, outputs

    register("probability-outputs", outputs.ProbabilityOutputs)
    register("batch-dependent", outputs.BatchDependent)
    register("few-classes", outputs.FewClasses)
    register("unavailable-gradients", indicators.UnavailableGradients, aliases=("gradients",))
    register("unstable-predictions", indicators.UnstablePredictions)
    register("silent-success", indicators.SilentSuccess)
    register("incomplete-optimization", indicators.IncompleteOptimization)
    register("non-converging-restarts", indicators.NonConvergingRestarts)
    register("transfer-failure", indicators.TransferFailure)
    register("eps-monotone", carlini.EpsMonotone)
    register("more-steps", carlini.MoreSteps)
    register("black-box-gap", carlini.BlackBox)
