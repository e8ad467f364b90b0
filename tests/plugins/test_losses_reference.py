"""MART and TRADES losses against the papers' formulas, computed by hand in float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advkit._internal.defense import TrainContext, create_defense
from advkit._internal.threat import ThreatModel


class Table(nn.Module):
    """Returns the logits stored for each input (inputs carry their row index in every pixel)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x.flatten(1)[:, 0].round().long()]


def ctx():
    return TrainContext(threat=ThreatModel.parse("Linf", "0.1"), device=torch.device("cpu"),
                        generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def case():
    """Clean logits for 8 points, different adversarial logits, labels: x are rows 0..7, x_adv rows 8..15."""
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(8, 5, generator=g, dtype=torch.float64) * 2
    adv = clean + torch.randn(8, 5, generator=g, dtype=torch.float64) * 1.5
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    model = Table(torch.cat([clean, adv]).float())
    x = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous()
    return model, x, x + 8, y, clean.numpy(), adv.numpy()


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def mart_by_hand(clean, adv, y, beta, kl_direction="clean||adv", weight="clean"):
    """Wang et al. (2020), eq. (9): BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x)), batch mean.

    BCE(p(x'), y) = -log p_y(x') - log(1 - max_{k != y} p_k(x')).
    """
    p, q = softmax(clean), softmax(adv)
    n = len(y)
    idx = np.arange(n)
    others = q.copy()
    others[idx, y] = -1
    bce = -np.log(q[idx, y]) - np.log(1 - others.max(1))
    kl = (p * (np.log(p) - np.log(q))).sum(1) if kl_direction == "clean||adv" else (q * (np.log(q) - np.log(p))).sum(1)
    w = 1 - (p if weight == "clean" else q)[idx, y]
    return float(bce.mean() + beta * (kl * w).mean())


def trades_by_hand(clean, adv, y, beta):
    """Zhang et al. (2019): CE(f(x), y) + beta * KL(p(x) || p(x')), batch mean."""
    p, q = softmax(clean), softmax(adv)
    ce = -np.log(p[np.arange(len(y)), y])
    return float(ce.mean() + beta * (p * (np.log(p) - np.log(q))).sum(1).mean())


@pytest.mark.parametrize("beta", [6.0, 1.5])
def test_mart_matches_the_formula(case, beta):
    model, x, x_adv, y, clean, adv = case
    ours = float(create_defense(f"mart:beta={beta}").loss(model, x, x_adv, y, ctx()))
    ref = mart_by_hand(clean, adv, y.numpy(), beta)
    # the reference code's 1.0001 and 1e-12 guards move the value by ~1e-4 (relative) here
    assert ours == pytest.approx(ref, rel=3e-4)
    # the test can tell the usual mistakes apart from the formula
    for wrong in (mart_by_hand(clean, adv, y.numpy(), beta, kl_direction="adv||clean"),
                  mart_by_hand(clean, adv, y.numpy(), beta, weight="adv"),
                  mart_by_hand(clean, adv, y.numpy(), 0.0)):
        assert abs(wrong - ref) > 3e-3 * abs(ref)  # ten times the tolerance


def test_trades_matches_the_formula(case):
    model, x, x_adv, y, clean, adv = case
    ours = float(create_defense("trades:beta=6").loss(model, x, x_adv, y, ctx()))
    ref = trades_by_hand(clean, adv, y.numpy(), 6.0)
    assert ours == pytest.approx(ref, rel=1e-5)
    p, q = softmax(clean), softmax(adv)
    reversed_kl = float(-np.log(p[np.arange(8), y.numpy()]).mean() + 6 * (q * (np.log(q) - np.log(p))).sum(1).mean())
    assert abs(reversed_kl - ref) > 1e-2 * ref


def test_trades_attack_loss_is_the_summed_kl(case):
    model, x, x_adv, y, clean, adv = case
    ours = float(create_defense("trades").attack_loss(model(x_adv), model(x), y))
    p, q = softmax(clean), softmax(adv)
    assert ours == pytest.approx(float((p * (np.log(p) - np.log(q))).sum()), rel=1e-5)
