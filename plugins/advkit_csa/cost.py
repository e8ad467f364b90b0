"""What a bank build will cost, said before it starts (our own: the estimators' pass counts and one timed batch).

The gradient estimator spends, per image, two forward passes (``v(all)``, ``v(empty)``)
and per coalition pair two gradient evaluations plus two exact differences per
energy-heavy player; its stop rule ends an image between ``2 x round_pairs`` and
``pairs`` pairs. The permutation estimator spends ``P - 1`` forward passes per
permutation. :func:`bank_cost` turns these counts into a time range with
:func:`advkit.plugin.calibrate` on a batch of the bank's own images.
"""

from __future__ import annotations

import torch

from advkit.plugin import calibrate, format_seconds


def pair_range(settings: dict) -> tuple[int, int]:
    """Fewest and most coalition pairs (gradient) or permutations (permutation) an image can take."""
    if settings.get("estimator") == "gradient":
        most = int(settings["pairs"])
        return (most if settings["target_loss"] is None else min(most, 2 * int(settings["round_pairs"]))), most
    most = int(settings["permutations"])
    return (most if settings["target_se"] is None else min(most, 2)), most


def image_costs(settings: dict, players, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``xs``: gradient evaluations and forward passes per pair (or per permutation)."""
    n = xs.shape[0]
    if settings.get("estimator") != "gradient":
        return torch.zeros(n), torch.full((n,), float(max(players.num_players - 1, 0)))
    from advkit_csa.linearized import exact_players
    from advkit_csa.quality import player_energy

    exact = torch.tensor([float(len(exact_players(e, settings["exact_share"]))) for e in player_energy(xs.cpu(), players)])
    return torch.full((n,), 2.0), 2 * exact


def bank_cost(model, xs: torch.Tensor, ys: torch.Tensor, images: int, settings: dict, players, batch_size: int) -> dict:
    """Forward passes (a gradient evaluation counted as ``GRADIENT_COST``) and seconds, fewest and most, for ``images``.

    ``xs, ys``: a sample of the images still to compute (a few hundred at most), on the model's device;
    the per-image counts are their mean.
    """
    from advkit_csa.linearized import GRADIENT_COST

    grads, forwards = image_costs(settings, players, xs)
    fewest, most = pair_range(settings)
    rows = torch.arange(batch_size) % xs.shape[0]
    per = calibrate(model, xs[rows], ys[rows])
    seconds_per_unit = float((grads * per["backward"] + forwards * per["forward"]).mean())
    passes_per_unit = float((grads * GRADIENT_COST + forwards).mean())
    ends = 2 * images
    return {"images": images, "units": (fewest, most),
            "passes": tuple(int(ends + k * images * passes_per_unit) for k in (fewest, most)),
            "seconds": tuple(ends * per["forward"] + k * images * seconds_per_unit for k in (fewest, most))}


def cost_line(cost: dict, settings: dict, world: int = 1) -> str:
    """``csa bank: 1,500 images to compute, 0.30 to 2.4 M forward passes (...): about 9 min to 1 h 10 min here``."""
    (p_lo, p_hi), (fewest, most) = cost["passes"], cost["units"]
    lo, hi = (t / max(world, 1) for t in cost["seconds"])
    unit = "pairs" if settings.get("estimator") == "gradient" else "permutations"
    procs = f" over {world} processes" if world > 1 else ""
    if fewest == most:
        return (f"csa bank: {cost['images']:,} images to compute, {p_hi / 1e6:.2f} M forward passes "
                f"({most} {unit} per image): about {format_seconds(hi)}{procs} here")
    return (f"csa bank: {cost['images']:,} images to compute, {p_lo / 1e6:.2f} to {p_hi / 1e6:.2f} M forward passes "
            f"({fewest} to {most} {unit} per image, the stop rule decides): about {format_seconds(lo)} to "
            f"{format_seconds(hi)}{procs} here")
