"""Sampling units of the estimator: permutation chains, evaluated as batches of coalition images.

A *full* unit is a random permutation (with its reverse, when antithetic):
all ``P - 1`` inner coalitions of the chain are evaluated, giving every
player's marginal; the chain's images are cumulative sums of the per-player
reconstructions, and ``full - cumsum`` for the reverse (the complements).

A *focused* unit is a random permutation in which only some players are
observed: only the coalitions just before and just after each of them join
are evaluated (about 2 forward passes per observed player and chain instead of
``P - 1`` per chain). Which players are observed is drawn independently of the
permutation, so each observed marginal is an exact sample from the same
distribution as in a full unit. Their images are ``base + members @ comps``.
"""

from __future__ import annotations

import torch

from advkit_csa.surrogate import chain_marginals


def _value(logits: torch.Tensor, y: torch.Tensor, value: str) -> torch.Tensor:
    if value == "prob":
        logits = torch.softmax(logits.float(), dim=-1)
    return logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1).float()


class ImageSamples:
    """Everything sampled so far for one image."""

    def __init__(self, index: int, y: int, generator: torch.Generator, p: int):
        self.index, self.y, self.generator, self.p = index, y, generator, p
        self.full_orders: list[torch.Tensor] = []
        self.full_d: list[torch.Tensor] = []  # (P,) marginals per unit (pair-averaged when antithetic)
        self.foc_orders: list[torch.Tensor] = []
        self.foc_masks: list[torch.Tensor] = []  # (P,) bool: observed players
        self.foc_d: list[torch.Tensor] = []  # (P,) marginals, 0 where not observed
        self.inc = [None, None]  # summed logit increments of the full units, per half (P, C)
        self.inc_n = [0, 0]
        self.z0 = self.zn = None
        self.v0 = self.vn = 0.0
        self.passes = 0
        self.done = False

    def draw(self, k: int) -> torch.Tensor:
        return torch.rand(k, self.p, generator=self.generator).argsort(dim=1)

    def draw_masks(self, k: int, q: torch.Tensor) -> torch.Tensor:
        return torch.rand(k, self.p, generator=self.generator) < q

    def add_increments(self, half: int, players: torch.Tensor, inc: torch.Tensor) -> None:
        if self.inc[half] is None:
            self.inc[half] = torch.zeros(self.p, inc.shape[-1], dtype=torch.float64)
        self.inc[half].index_add_(0, players.reshape(-1), inc.reshape(-1, inc.shape[-1]).double())


# ----------------------------------------------------------------------------- full units


def full_logits(fwd, comps, base, full, owners, orders, antithetic):
    """Logits (U, P-1, C) of the inner coalitions of each permutation, and of its reverse (or None)."""
    u, p = orders.shape
    cs = comps[owners[:, None], orders.to(comps.device)].cumsum_(dim=1)[:, : p - 1]  # (U, P-1, C, H, W)
    images = torch.empty((2 if antithetic else 1, *cs.shape), dtype=cs.dtype, device=cs.device)
    torch.add(cs, base[owners][:, None], out=images[0])
    if antithetic:  # the complements, i.e. the coalitions of the reversed permutation
        torch.sub(full[owners][:, None], cs, out=images[1])
    logits = fwd(images.flatten(0, 2)).view(images.shape[0], u, p - 1, -1).cpu()
    return logits[0], (logits[1] if antithetic else None)


def record_full(s: ImageSamples, orders, zf, zr, value, antithetic) -> None:
    """Marginals and logit increments of some full units of one image."""
    k = orders.shape[0]
    y = torch.tensor(s.y)

    def ends(z):
        return torch.cat([s.z0.expand(k, 1, -1), z, s.zn.expand(k, 1, -1)], dim=1)

    fwd_logits = ends(zf)  # (k, P+1, C)
    d = chain_marginals(_value(fwd_logits, y, value), orders, False)
    half = (torch.arange(k) + len(s.full_orders)) % 2
    chains = [(orders, fwd_logits[:, 1:] - fwd_logits[:, :-1])]
    if antithetic:
        rev_logits = ends(zr.flip(1))
        d = 0.5 * (d + chain_marginals(_value(rev_logits, y, value), orders, True))
        chains.append((orders.flip(1), rev_logits[:, 1:] - rev_logits[:, :-1]))
    for h in (0, 1):
        sel = half == h
        for players, inc in chains:
            s.add_increments(h, players[sel], inc[sel])
        s.inc_n[h] += int(sel.sum()) * len(chains)
    s.full_d.extend(d.double().unbind(0))
    s.full_orders.extend(orders.unbind(0))


# ----------------------------------------------------------------------------- focused units


def needed_prefixes(orders: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(U, P+1) bool: the prefix lengths (coalition sizes) a focused unit must evaluate (ends excluded)."""
    observed = masks.gather(1, orders)  # (U, P): observed player at each position
    need = torch.zeros(orders.shape[0], orders.shape[1] + 1, dtype=torch.bool)
    need[:, :-1] |= observed
    need[:, 1:] |= observed
    need[:, 0] = False
    need[:, -1] = False
    return need


def focused_logits(fwd, comps, base, full, owners, orders, need, antithetic):
    """Logits (M, C) of the needed prefixes (in ``need.nonzero()`` order), and of their complements."""
    idx = need.nonzero()
    if idx.numel() == 0:
        return torch.zeros(0, 1), (torch.zeros(0, 1) if antithetic else None)
    pos = orders.argsort(dim=1)  # position of each player
    members = (pos[idx[:, 0]] < idx[:, 1:2]).to(comps.dtype).to(comps.device)  # (M, P)
    img_owner = owners[idx[:, 0].to(owners.device)]
    shape = comps.shape[2:]
    flat = comps.flatten(2)  # (N, P, CHW)
    images = torch.empty((2 if antithetic else 1, idx.shape[0], *shape), dtype=comps.dtype, device=comps.device)
    for o in img_owner.unique().tolist():
        sel = (img_owner == o).nonzero().flatten()
        part = (members[sel] @ flat[o]).view(-1, *shape)
        images[0, sel] = base[o] + part
        if antithetic:
            images[1, sel] = full[o] - part
    logits = fwd(images.flatten(0, 1)).view(images.shape[0], idx.shape[0], -1).cpu()
    return logits[0], (logits[1] if antithetic else None)


def record_focused(s: ImageSamples, orders, masks, need, zf, zr, value, antithetic) -> None:
    """Marginals of the observed players of some focused units of one image."""
    u, p = orders.shape
    y = torch.tensor(s.y)
    observed = masks.gather(1, orders)

    def prefix_values(first, last, z):
        v = torch.zeros(u, p + 1)
        v[:, 0], v[:, -1] = first, last
        if z.numel():
            v[need] = _value(z, y, value)
        return v

    vf = prefix_values(s.v0, s.vn, zf)
    d = vf[:, 1:] - vf[:, :-1]  # marginal of the player at each position
    if antithetic:  # the reverse: player at position k joins N minus the first k+1 players
        vr = prefix_values(s.vn, s.v0, zr)
        d = 0.5 * (d + (vr[:, :-1] - vr[:, 1:]))
    d = torch.where(observed, d, torch.zeros_like(d))
    by_player = torch.zeros(u, p, dtype=torch.float64).scatter_(1, orders, d.double())
    s.foc_d.extend(by_player.unbind(0))
    s.foc_masks.extend(masks.unbind(0))
    s.foc_orders.extend(orders.unbind(0))
