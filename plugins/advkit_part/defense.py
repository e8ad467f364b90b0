"""PART (Zhang et al., ICML 2024): pixel-reweighted adversarial training, as an *adversary* defense.

Each training image gets a per-pixel Linf budget: ``eps`` on the pixels its
class activation map marks as important (z-score above ``threshold``),
``eps_low`` (7/8 of eps by default) on the others (:mod:`advkit_part.budget`).
The adversary is the engine's training PGD (:func:`advkit.adversary.pgd`)
projecting onto that map and maximising ``ctx.attack_loss``, so the objective
decides the loss: ``--defense pgd-at --defense part`` is PART,
``--defense trades --defense part`` PART-T and ``--defense mart --defense part``
PART-M. Steps, start and step size are the objective's own adversary settings
(``pgd-at:steps=3`` gives 3 steps) unless set here; the step is eps/4 on every
pixel, as the reference's 2/255 at 8/255, and the projection does the rest.

Schedule: the first ``warmup`` epochs are plain adversarial training (uniform
eps, default 20% of the epochs and at least one when there are two or more,
the reference's 20 of 100); then the masks are recomputed every ``every``
epochs (the paper's s) at the epoch start, for the whole training set, and
stored by dataset index (:mod:`advkit_part.masks`). With ``maps=batch`` the
map is instead computed at every step on the very batch being attacked, after
augmentation and the *data* defenses, with the current weights.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that use it, so that `advkit list` stays fast
    import torch

from advkit.plugin import Defense, TrainContext, UserError
from advkit_part.budget import budget_map, check_low, check_threshold, important, low_budget
from advkit_part.cam import TARGETS, VARIANTS, cam_maps, check_choice, find_layer
from advkit_part.masks import MaskBank

SOURCES = ("epoch", "batch")


def default_warmup(epochs: int) -> int:
    """20% of the epochs, at least one when there are two or more (the CAMs of an untrained net are noise)."""
    epochs = int(epochs)
    return 0 if epochs < 2 else min(epochs - 1, max(1, round(0.2 * epochs)))


class PART(Defense):
    """PART (Zhang et al. 2024): PGD with a CAM-guided per-pixel budget (eps on important pixels, eps_low elsewhere)."""

    def __init__(self, cam: str = "gradcam", layer: str = "", threshold: float = 1.0, eps_low: float | None = None,
                 ratio: float | None = None, warmup: int | None = None, every: int = 1, target: str = "pred",
                 maps: str = "epoch", steps: int | None = None, step_size: float | None = None,
                 batch_size: int = 256):
        super().__init__(cam=cam, layer=layer, threshold=threshold, eps_low=eps_low, ratio=ratio, warmup=warmup,
                         every=every, target=target, maps=maps, steps=steps, step_size=step_size,
                         batch_size=batch_size)
        self.variant = check_choice("cam", cam, VARIANTS)
        self.target = check_choice("target", target, TARGETS)
        self.source = check_choice("maps", maps, SOURCES)
        self.threshold = check_threshold(threshold)
        self.layer_name = str(layer or "")
        check_low(eps_low, ratio)
        if warmup is not None and (int(warmup) != warmup or int(warmup) < 0):
            raise UserError(f"part.warmup must be a whole number of epochs >= 0, got {warmup!r}")
        if int(every) != every or int(every) < 1:
            raise UserError(f"part.every must be a whole number of epochs >= 1, got {every!r}")
        if self.source == "batch" and int(every) != 1:
            raise UserError("part.every applies to maps=epoch; maps=batch computes the maps at every step")
        if steps is not None and (int(steps) != steps or int(steps) < 0):
            raise UserError(f"part.steps must be a whole number >= 0, got {steps!r}")
        if step_size is not None and not float(step_size) > 0:
            raise UserError(f"part.step_size must be > 0 (or omitted for eps/4), got {step_size!r}")
        if int(batch_size) < 1:
            raise UserError(f"part.batch_size must be >= 1, got {batch_size!r}")
        self.every = int(every)
        self.warmup = None if warmup is None else int(warmup)
        self.batch_size = int(batch_size)
        self.eps = self.eps_low = None
        self.layer = self.layer_path = None
        self.bank = MaskBank()
        self.device = None
        self._pgd = None  # (steps, step_size, start, start_std), fixed at setup

    # ------------------------------------------------------------------ preparation

    def setup(self, model, data, ctx: TrainContext) -> None:
        import torch

        threat = ctx.threat
        if threat.norm != "Linf":
            raise UserError(f"part needs a Linf threat model (a per-pixel budget), got {threat.norm}")
        self.eps = float(threat.eps)
        self.eps_low = low_budget(self.eps, self.params["eps_low"], self.params["ratio"])
        given = self.params["warmup"]
        self.warmup = default_warmup(ctx.epochs) if given is None else int(given)
        if given is not None and self.warmup >= int(ctx.epochs):
            warnings.warn(f"part.warmup={self.warmup} >= {ctx.epochs} epochs: PART never starts (plain adversarial training)",
                          stacklevel=2)
        self.device = ctx.device
        self._pgd = None
        self._pgd = steps, step_size, start, start_std = self.pgd_config(ctx)
        reach = steps * step_size + (3 * start_std if start == "normal" else 0.0)
        if start != "uniform" and reach <= self.eps_low:
            warnings.warn(f"part: {steps} steps of {step_size:.4g} from a {start} start reach at most {reach:.4g}, "
                          f"not beyond eps_low={self.eps_low:.4g}: the budget map has no effect (use more steps "
                          f"or a larger step_size)", stacklevel=2)
        x0, y0 = data[0]
        probe = torch.as_tensor(x0).unsqueeze(0).to(ctx.device, torch.float32)
        self.layer = self.layer_path = find_layer(model, probe, self.layer_name)
        cam_maps(model, probe, torch.as_tensor([int(y0)], device=ctx.device), self.layer, self.variant, self.target)

    def active(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) uses the per-pixel budget (after the warm-up)."""
        return epoch >= self.warmup

    def due(self, epoch: int) -> bool:
        """Whether the masks are recomputed at the start of ``epoch``."""
        if self.source != "epoch" or not self.active(epoch):
            return False
        return self.bank.high is None or (epoch - self.warmup) % self.every == 0

    def on_epoch_start(self, model, data, ctx: TrainContext) -> None:
        if self.due(ctx.epoch):
            self.bank.compute(model, data, layer=self.layer, variant=self.variant, target=self.target,
                              threshold=self.threshold, batch_size=self.batch_size, device=ctx.device, epoch=ctx.epoch)

    # ------------------------------------------------------------------ the adversary point

    def eps_map(self, model, x, y, ctx: TrainContext) -> torch.Tensor:
        """The (N, 1, H, W) budget of the batch ``x`` (dataset positions ``ctx.index``)."""
        if self.source == "batch":
            high = important(cam_maps(model, x, y, self.layer, self.variant, self.target, self.batch_size), self.threshold)
        else:
            if ctx.index is None:
                raise UserError("part: the training engine gave no dataset indices (ctx.index) for the batch")
            high = self.bank.for_batch(ctx.index, ctx.state.get("augmentation"))
        return budget_map(high.to(x.device), self.eps, self.eps_low, x.dtype)

    def perturb(self, model, x, y, ctx: TrainContext) -> torch.Tensor:
        from advkit.plugin import pgd_perturbation as pgd

        threat = ctx.threat
        eps = threat.eps
        if self.active(ctx.epoch):
            eps = self.eps_map(model, x, y, ctx)
            ctx.state["eps_map"] = eps  # the engine checks every perturbation against it
        steps, step_size, start, start_std = self.pgd_config(ctx)
        return pgd(model, x, y, norm="Linf", eps=eps, steps=steps, step_size=step_size, loss_fn=ctx.attack_loss,
                   start=start, start_std=start_std, bounds=threat.bounds, generator=ctx.generator)

    def pgd_config(self, ctx: TrainContext) -> tuple[int, float, str, float]:
        """Steps, step size (eps/4 on every pixel unless set), start and start std of the adversary."""
        if self._pgd is not None:
            return self._pgd
        from advkit.plugin import PGDSettings

        cfg = ctx.adversary or PGDSettings()  # the objective's own adversary settings
        steps = cfg.steps if self.params["steps"] is None else int(self.params["steps"])
        step_size = float(self.params["step_size"] or cfg.step_size or float(ctx.threat.eps) / 4)
        return steps, step_size, cfg.start, cfg.start_std

    # ------------------------------------------------------------------ resumption

    def state_dict(self) -> dict:
        return self.bank.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.bank.load_state_dict(state, self.device)
