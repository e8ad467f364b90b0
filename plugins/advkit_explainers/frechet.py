"""The Fréchet distance between two sets of feature vectors (the distance behind FID).

d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with unbiased covariances
(as in the usual FID code). tr (Σ_a Σ_b)^½ is computed in float64 as
Σ √λ_i of the symmetric PSD matrix Σ_a^½ Σ_b Σ_a^½ (same eigenvalues as
Σ_a Σ_b), by eigendecomposition, so no complex matrix square root is needed.
"""

from __future__ import annotations

import torch

from advkit.errors import UserError


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, k) feature sets."""
    a = torch.as_tensor(feats_a).detach().flatten(1).double().cpu()
    b = torch.as_tensor(feats_b).detach().flatten(1).double().cpu()
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets differ in width ({a.shape[1]} vs {b.shape[1]})")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise UserError(f"the Fréchet distance needs at least 2 vectors per set (got {a.shape[0]} and {b.shape[0]})")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    d2 = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return float(d2.clamp_min(0))
