"""Per-epoch validation: clean accuracy and robust accuracy under a registered attack.

The attack goes through :meth:`advkit._internal.attack.Attack.run` like in an
evaluation: an output that leaves the threat model stops training with a
threat-model violation. On a stochastic model (LWTA, noise injection) the
attack is the one ``advkit eval`` runs: its declared adaptive counterpart, or
the attack on the mean logits of ``eot`` forward passes (EOT). With ``eot``
of 1 the figure comes from a single sample, and the epoch line says that it
is not adaptive.

A stochastic model is judged like ``advkit eval`` judges it, with one draw per
point (:class:`advkit._internal.stochastic.Judge`: one point at a time when the
model draws once per batch), and a point counts as robust only when it is
correct both clean and attacked, so robust accuracy never exceeds clean.
"""

from __future__ import annotations

import torch

from advkit._internal.adversary import frozen
from advkit._internal.meter import Meter
from advkit._internal.progress import progress, say


def parse_attack(spec: str | None):
    """``(name, params)`` of a ``"name:k=v"`` spec; the declared validation attack for None; None for ``"none"``."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import parse_spec

    if spec is None:
        declared = registry("attack").with_capability("validation")
        return (declared[0].name, {}) if declared else None
    if not str(spec).strip() or str(spec).strip().lower() == "none":
        return None
    return parse_spec(str(spec))


def _draws_per_point(model, x) -> bool:
    """:func:`~advkit._internal.stochastic.draws_per_point` in eval mode, the model's mode restored."""
    from advkit._internal.stochastic import draws_per_point

    was = model.training
    try:
        return draws_per_point(model.eval(), x)
    finally:
        model.train(was)


class Validator:
    """Validation of one run: the held-out tensors, the attack, and how its figure is labelled."""

    def __init__(self, model, x, y, threat, spec: str | None, *, stochastic: bool, eot: int,
                 batch_size: int, dist, quiet: bool):
        from advkit._internal.attack import create_attack
        from advkit._internal.stochastic import EOTModel, Judge, adaptive_name

        self.model, self.x, self.y = model, x, y
        self.judge = Judge(model, 1, per_point=not stochastic or not len(x) or _draws_per_point(model, x[:64]))
        self.batch_size, self.dist, self.quiet = batch_size, dist, quiet
        self.attack = self.label = self.adaptive = None
        parsed = parse_attack(spec)
        if parsed is None:
            return
        name, params = parsed
        run_name = adaptive_name(name, stochastic)
        target = model
        if stochastic and run_name == name and eot > 1:
            target = EOTModel(model, eot).eval()
        self.attack = create_attack(run_name, target, threat, **params)
        self.label = run_name if run_name == name else f"{name}->{run_name}"
        if stochastic:
            self.adaptive = ("adaptive" if run_name != name else f"EOT {eot}") if (run_name != name or eot > 1) \
                else "single sample, not adaptive"
            self.announce(len(x), eot if target is not model else 1)

    def announce(self, n: int, eot: int) -> None:
        """Say what validating a stochastic model costs per epoch, in passes, from the attack's declared plan."""
        stages = self.attack.stages
        if self.quiet or not stages or not self.dist.main:
            return
        fwd = sum(st.forward * st.share for st in stages) * eot
        bwd = sum(st.backward * st.share for st in stages) * eot
        say(f"advkit: validation of a stochastic model: {self.label} ({self.adaptive}) on {n} images, up to "
            f"{fwd:,.0f} forward + {bwd:,.0f} backward passes per image, {n * (fwd + bwd):,.0f} per epoch "
            f"(--val-eot and --n-val set it)")

    def __call__(self, epoch: int) -> tuple[float, float | None]:
        """Clean accuracy (inference mode) and robust accuracy on this rank's shard, summed over ranks."""
        model, dist = self.model, self.dist
        model.eval()
        xs, ys = self.x[dist.rank::dist.world], self.y[dist.rank::dist.world]
        clean = robust = 0
        bar = progress(xs.shape[0], f"validate {epoch}", quiet=self.quiet, unit="img")
        meter = Meter(bar, self.attack) if self.attack is not None else None  # moves within a batch, per pass
        for i in range(0, xs.shape[0], self.batch_size):
            xb, yb = xs[i:i + self.batch_size], ys[i:i + self.batch_size]
            with torch.inference_mode():
                right = self.judge.logits(xb).argmax(1) == yb
            clean += int(right.sum())
            if meter is None:
                bar.update(len(xb))
                continue
            meter.start(len(xb))
            try:
                with frozen(model):
                    out = self.attack.run(xb, yb)
            finally:
                meter.stop()
            with torch.no_grad():
                kept = int(((self.judge.logits(out.x_adv).argmax(1) == yb) & right).sum())
            robust += kept
            meter.done(len(xb), out.passes, len(xb) - kept, None)
        bar.close()
        total, clean, robust = dist.all_sum([float(xs.shape[0]), float(clean), float(robust)], self.x.device)
        if total == 0:
            return float("nan"), None
        return clean / total, (robust / total if self.attack is not None else None)
