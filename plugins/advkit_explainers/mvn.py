"""Multivariate normal fitted to a set of images, with a shrunk (positive definite) covariance.

The covariance is Σ_λ = (1 − λ)·S + λ·(tr S / d)·I, with S = X_cᵀX_c / n the
sample covariance of the centred images X_c (n × d). Sampling never forms the
d × d matrix: x = μ + √(1 − λ)·X_cᵀz/√n + √(λ·tr S/d)·ε with z ~ N(0, I_n) and
ε ~ N(0, I_d) has exactly that covariance, so any image size works.
"""

from __future__ import annotations

import torch

from advkit.plugin import UserError


class ShrunkNormal:
    """N(μ, Σ_λ) over images shaped like ``images[0]``."""

    def __init__(self, images: torch.Tensor, shrinkage: float = 0.1):
        if images.shape[0] < 2:
            raise UserError("fitting a normal distribution needs at least 2 images")
        if not 0.0 < float(shrinkage) <= 1.0:
            raise UserError(f"shrinkage must be in (0, 1], got {shrinkage!r}")
        flat = images.flatten(1).double()
        self.shape = tuple(images.shape[1:])
        self.mean = flat.mean(0)
        self.centred = flat - self.mean
        self.n, self.d = flat.shape
        self.shrinkage = float(shrinkage)
        self.isotropic = float((self.centred**2).sum() / self.n / self.d)  # tr S / d

    def covariance(self) -> torch.Tensor:
        """Σ_λ as a dense d × d matrix (for checks on small images)."""
        s = self.centred.T @ self.centred / self.n
        return (1 - self.shrinkage) * s + self.shrinkage * self.isotropic * torch.eye(self.d, dtype=s.dtype, device=s.device)

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        dev = self.mean.device
        z = torch.randn(k, self.n, dtype=torch.float64, device=dev, generator=generator)
        e = torch.randn(k, self.d, dtype=torch.float64, device=dev, generator=generator)
        x = self.mean + (1 - self.shrinkage) ** 0.5 * (z @ self.centred) / self.n**0.5 + (self.shrinkage * self.isotropic) ** 0.5 * e
        return x.float().view(k, *self.shape)
