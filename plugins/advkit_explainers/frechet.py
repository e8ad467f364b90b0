"""The Fréchet distance between two sets of feature vectors (the distance behind FID).

d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with unbiased covariances,
in float64. With at least as many vectors as features it is computed by
torch-fidelity's ``fid_features_to_statistics`` and ``fid_statistics_to_metric``
(the reference TTUR code: tr (Σ_a Σ_b)^½ as the sum of the square roots of the
eigenvalues of the k×k matrix Σ_a Σ_b; about 25 s of CPU at k = 2048).

With fewer vectors than features (the usual case of an explained batch under
FID's 2048 features) advkit computes the same number itself, exactly and in
milliseconds: with A, B the centred feature sets divided by √(n − 1), Σ_a = AᵀA
and Σ_b = BᵀB, the non-zero eigenvalues of Σ_a Σ_b are those of (ABᵀ)(ABᵀ)ᵀ,
so tr (Σ_a Σ_b)^½ is the sum of the singular values of the n_a×n_b matrix ABᵀ.
"""

from __future__ import annotations

import torch

from advkit.plugin import UserError


def _check(feats_a, feats_b) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(feats_a).detach().flatten(1).double().cpu()
    b = torch.as_tensor(feats_b).detach().flatten(1).double().cpu()
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets differ in width ({a.shape[1]} vs {b.shape[1]})")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise UserError(f"the Fréchet distance needs at least 2 vectors per set (got {a.shape[0]} and {b.shape[0]})")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise UserError("the features hold NaN or inf values: the Fréchet distance is undefined")
    return a, b


def _low_rank(a: torch.Tensor, b: torch.Tensor) -> float:
    ca = (a - a.mean(0)) / (a.shape[0] - 1) ** 0.5
    cb = (b - b.mean(0)) / (b.shape[0] - 1) ** 0.5
    cross = torch.linalg.svdvals(ca @ cb.T).sum()
    d2 = (a.mean(0) - b.mean(0)).pow(2).sum() + ca.pow(2).sum() + cb.pow(2).sum() - 2 * cross
    return float(d2)


def _torch_fidelity(a: torch.Tensor, b: torch.Tensor) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats_a, stats_b = fid_features_to_statistics(a), fid_features_to_statistics(b)
    if a.shape[1] == 1:  # np.cov returns a 0-d array for one feature
        stats_a["sigma"], stats_b["sigma"] = stats_a["sigma"].reshape(1, 1), stats_b["sigma"].reshape(1, 1)
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, k) feature sets (≥ 0 up to rounding)."""
    a, b = _check(feats_a, feats_b)
    if max(a.shape[0], b.shape[0]) < a.shape[1]:
        return _low_rank(a, b)
    return _torch_fidelity(a, b)
