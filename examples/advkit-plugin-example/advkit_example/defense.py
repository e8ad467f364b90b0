"""Defense ``gaussian-augment``: train on clean images plus Gaussian noise (the *data* point).

Gaussian data augmentation is the training recipe of randomized smoothing
(Cohen et al., 2019). It composes with any objective: ``--defense pgd-at
--defense gaussian-augment`` attacks the noisy batch.
"""

from __future__ import annotations

from advkit.plugin import Defense


class GaussianAugment(Defense):
    """Add N(0, SIGMA^2) noise to a fraction P of each clean batch (clipped to [0, 1])."""

    def __init__(self, sigma: float = 0.1, p: float = 1.0):
        super().__init__(sigma=sigma, p=p)
        self.sigma, self.p = float(sigma), float(p)
        self.noised = 0  # images noised this epoch, for the training log

    def transform_batch(self, x, y, ctx):
        import torch

        g = ctx.generator  # the step's seeded generator: the run stays reproducible and resumable
        pick = torch.rand(x.shape[0], device=x.device, generator=g) < self.p
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=g) * self.sigma
        self.noised += int(pick.sum())
        return torch.where(pick.view(-1, 1, 1, 1), (x + noise).clamp(0, 1), x), y

    def on_epoch_start(self, model, data, ctx):
        self.noised = 0

    def on_epoch_end(self, model, data, ctx):
        ctx.report(f"gaussian-augment: {self.noised} images noised (sigma {self.sigma:g})")
