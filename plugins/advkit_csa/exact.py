"""Exact frequency Shapley values by enumerating all ``2^P`` coalitions (small grids only)."""

from __future__ import annotations

import math

import torch

from advkit.plugin import UserError
from advkit_csa.players import FrequencyPlayers
from advkit_csa.shapley import VALUES, ShapleyResult, _device_of, _Forward, _value

MAX_PLAYERS = 16


def exact_frequency_shapley(model, x: torch.Tensor, y: torch.Tensor, *, grid: tuple[int, int], value: str = "prob",
                            batch_size: int = 1024) -> ShapleyResult:
    """The same game as :func:`advkit_csa.shapley.frequency_shapley`, solved exactly (at most 16 players)."""
    if value not in VALUES:
        raise UserError(f"value must be one of {VALUES}, got {value!r}")
    players = FrequencyPlayers(tuple(x.shape[-2:]), grid)
    p = players.num_players
    if p > MAX_PLAYERS:
        raise UserError(f"exact Shapley values enumerate 2^{p} coalitions; use at most {MAX_PLAYERS} players")
    device = _device_of(model)
    codes = torch.arange(2**p)
    members = ((codes[:, None] >> torch.arange(p)) & 1).float()  # (2^P, P)
    size = members.sum(1).long()
    weight = torch.tensor([math.factorial(s) * math.factorial(p - s - 1) / math.factorial(p) for s in range(p)], dtype=torch.float64)
    fwd = _Forward(model, batch_size)
    was_training = getattr(model, "training", False)
    model.eval()
    values = torch.zeros(x.shape[0], p)
    v_all = torch.zeros(x.shape[0])
    v_none = torch.zeros(x.shape[0])
    try:
        with torch.inference_mode():
            for n in range(x.shape[0]):
                comps, base = players.components(x[n : n + 1].to(device).float())
                images = base + torch.einsum("sp,pchw->schw", members.to(device), comps[0])
                v = _value(fwd(images), y[n].to("cpu").long(), value).double().cpu()
                for i in range(p):
                    without = (codes >> i) & 1 == 0
                    s = codes[without]
                    values[n, i] = float((weight[size[s]] * (v[s | (1 << i)] - v[s])).sum())
                v_all[n], v_none[n] = float(v[-1]), float(v[0])
    finally:
        model.train(was_training)
    settings = {"grid": list(players.grid), "players": p, "value": value, "exact": True}
    count = torch.full((x.shape[0],), 2**p, dtype=torch.long)
    return ShapleyResult(values, torch.zeros_like(values), v_all, v_none, torch.zeros_like(count), count, players, settings)
