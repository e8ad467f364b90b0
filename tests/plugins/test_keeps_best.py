"""``keeps_best`` checked by behaviour: an attack that declares it returns a misclassified example for every
point that any input it queried inside the threat model misclassified.

The reference is the model's own record of every query (not the attack's code): a wrapper stores each input
and its logits, each stored input is assigned to the clean point whose eps-ball holds it, and a point counts as
broken by an iterate when some stored logits put another class above the label by a margin. On a model with
jumpy logits (k-WTA-like), PGD's last iterate loses points an earlier iterate broke, which the negative control
checks, so the test sees the difference it is about.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import advkit
from advkit._internal.plugins import registry

EPS = 0.03
MARGIN = 1e-4  # a query counts as misclassified only by more than float noise
CHEAP = {  # fewer iterations where an attack has a knob; the property does not depend on the budget
    "apgd": "apgd:steps=10", "apgdt": "apgdt:steps=5", "fab": "fab:steps=10", "square": "square:n_queries=200",
    "ta.square": "ta.square:n_queries=200", "art.square": "art.square:max_iter=200",
}


class Jumpy(torch.nn.Module):
    """A trained network plus a fast sinusoid of a random projection: gradients exist but jump (as k-WTA's)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("R", torch.randn(64, 10, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return self.net(x) + 2.0 * torch.sin(60.0 * x.flatten(1) @ self.R)


class Recording(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        out = self.net(x)
        self.seen.append((x.detach().clone(), out.detach().clone()))
        return out


@pytest.fixture(scope="module")
def jumpy(tiny):
    net, _, _, data = tiny
    model = Jumpy(net).eval()
    x, y = data.tensors()
    x, y = x[:40], y[:40]
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return model, x[right][:16], y[right][:16]


def broken(spec, model, x, y):
    """(points some in-ball query misclassified, points the returned examples misclassify)."""
    rec = Recording(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adv = advkit.create_attack(spec, rec, eps=EPS)(x, y)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        returned = model(adv).argmax(1) != y
    queried = torch.zeros(len(x), dtype=torch.bool)
    for q, logits in rec.seen:
        near = (q[:, None] - x[None]).flatten(2).abs().amax(2) <= EPS + 1e-6  # query x point
        for row in range(len(q)):
            owner = near[row].nonzero().flatten()
            if len(owner) != 1:
                continue
            p = int(owner[0])
            others = logits[row].clone()
            others[y[p]] = -float("inf")
            queried[p] |= bool(others.max() - logits[row, y[p]] > MARGIN)
    return queried, returned


def declared():
    return sorted(e.name for e in registry("attack") if e.can("keeps_best") or e.can("early_stop"))


@pytest.mark.parametrize("name", declared())
def test_a_declared_attack_returns_every_point_an_iterate_broke(jumpy, name):
    queried, returned = broken(CHEAP.get(name, name), *jumpy)
    assert queried.any()  # the model is breakable at this budget: the property is not vacuous
    lost = (queried & ~returned).nonzero().flatten().tolist()
    assert not lost, f"{name}: points {lost} were misclassified by a query and returned correctly classified"


@pytest.mark.parametrize("name", ["pgd", "ta.pgd"])
def test_pgd_returns_its_last_iterate_and_loses_points_an_earlier_one_broke(jumpy, name):
    queried, returned = broken(name, *jumpy)
    assert (queried & ~returned).sum() >= 3
