"""The ``fast`` attack factory: the schedule of :mod:`advkit_fast.suite` bound to a model and a threat model."""

from __future__ import annotations

from advkit.plugin import LibraryAttack, dist_version


def fast(model, threat, seed: int = 0):
    """fast: AutoAttack's APGD-T/APGD-CE (and FAB-T under L2) on a schedule that follows the classes; not standard AA"""
    from advkit_fast.suite import fast_attack, library, plan, schedule

    impl = library()[0]
    n_classes = _classes(model)
    stages = plan(n_classes, threat.norm)  # also refuses a norm it does not support

    def run(x, y):
        return fast_attack(model, x, y, norm=threat.norm, eps=float(threat.eps), seed=seed, n_classes=n_classes)

    label = f"advkit fast schedule of {impl} {dist_version(impl)} attacks ({len(stages)} stages)"
    report = {"stages": [name for name, _, _ in schedule(n_classes, threat.norm)], "standard_autoattack": False}
    return LibraryAttack(run, label, report=report, stages=stages)


def _classes(model) -> int:
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and declared > 1:
        return declared
    import torch

    shape = getattr(model, "input_shape", None)
    if shape is None:
        return 10
    with torch.no_grad():
        return int(model(torch.zeros(1, *shape, device=next(model.parameters()).device)).shape[-1])
