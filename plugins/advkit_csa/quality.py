"""How good a set of frequency Shapley values is *for the NFC bank* (our own metric).

The bank stores ``p_X = 1[phi < 0] * F(X)``: only the signs of the values
reach it. So an estimator for the bank is judged by the signs it gets right,
against a high-budget reference on fixed games, not by its standard errors:

- **weighted NFC agreement**: the share of the reference's ``sum |phi|`` carried
  by the players whose sign (negative or not) the estimate gets right. A wrong
  sign on a player worth nothing costs nothing; one on a player that carries
  weight costs its weight. ``disagreement = 1 - agreement``.
- **relative error of p_X**: ``||p_est - p_ref|| / ||p_ref||`` over the spectrum.
  ``p`` differs only on the players of the wrong sign, so this is
  ``sqrt(sum of their spectral energy / energy of the reference's NFC)``. It weights
  a player by its energy, not its value, so players with large amplitude and a
  value near zero (whose sign even the reference does not settle) dominate it:
  :func:`reference_floor` gives the part of both numbers that the reference's
  own standard errors explain.

:class:`ReferenceGames` reads the fixed games (images, labels and high-budget
values with standard errors) that ``benchmarks/csa_reference.py`` writes; the
test suite and ``benchmarks/bench_shapley.py`` compare every estimator on them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from advkit.plugin import UserError

REFERENCE_FORMAT = "advkit-csa-reference/1"


def player_energy(x: torch.Tensor, players) -> torch.Tensor:
    """(N, P) spectral energy ``sum |F(x)|^2`` of each player's cell, summed over channels."""
    spec = torch.fft.fft2(x.double())
    energy = spec.abs().pow(2).sum(-3)  # (N, H, W), unshifted layout
    masks = players.masks[:-1].to(energy.device).double()  # (P, H, W) players, centre excluded
    return torch.einsum("nhw,phw->np", energy, masks)


def bank_quality(values: torch.Tensor, reference: torch.Tensor, energy: torch.Tensor) -> dict:
    """Per-image weighted NFC agreement, disagreement and relative error of ``p_X`` (each (N,)).

    ``values``/``reference``/``energy`` are (N, P): the estimate, the reference
    values and :func:`player_energy`.
    """
    values, reference, energy = values.double(), reference.double(), energy.double()
    weight = reference.abs()
    wrong = ((values < 0) != (reference < 0)).double()
    disagreement = (weight * wrong).sum(1) / weight.sum(1).clamp_min(1e-300)
    nfc = (energy * (reference < 0).double()).sum(1)
    rel = ((energy * wrong).sum(1) / nfc.clamp_min(1e-300)).sqrt()
    return {"agreement": 1 - disagreement, "disagreement": disagreement, "p_relerr": rel}


def reference_floor(reference: torch.Tensor, stderr: torch.Tensor, energy: torch.Tensor) -> dict:
    """Expected disagreement and ``p_X`` error of a *perfect* estimate against a noisy reference.

    A reference value with standard error ``s`` has the wrong sign with
    probability ``Phi(-|phi| / s)``; these numbers are what a perfect
    estimator would score on average, the floor under every measurement.
    """
    ref, s, energy = reference.double(), stderr.double().clamp_min(1e-300), energy.double()
    flip = 0.5 * torch.erfc(ref.abs() / s / math.sqrt(2))
    weight = ref.abs()
    disagreement = (weight * flip).sum(1) / weight.sum(1).clamp_min(1e-300)
    nfc = (energy * (ref < 0).double()).sum(1)
    rel = ((energy * flip).sum(1) / nfc.clamp_min(1e-300)).sqrt()
    return {"disagreement": disagreement, "p_relerr": rel}


def expected_sign_loss(values: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """(N,) the weighted disagreement an estimate expects of itself: ``sum |phi| Phi(-|phi|/se) / sum |phi|``.

    Under a normal approximation of each value's error this is the expected
    share of ``sum |phi|`` on players whose sign is wrong; the sequential bank
    estimator stops an image when it falls below its target.
    """
    v, s = values.double(), stderr.double().clamp_min(1e-300)
    weight = v.abs()
    return (weight * 0.5 * torch.erfc(weight / s / math.sqrt(2))).sum(-1) / weight.sum(-1).clamp_min(1e-300)


@dataclass
class ReferenceGames:
    """Fixed games for comparing estimators: images (N, C, H, W), labels, dataset indices, reference values/stderr (N, P)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    stderr: torch.Tensor
    v_full: torch.Tensor
    v_empty: torch.Tensor
    meta: dict

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceGames":
        from advkit.plugin import load_tensors

        path = Path(path)
        side = path.with_suffix(".json")
        if not side.is_file():
            raise UserError(f"reference games {path} have no {side.name}")
        meta = json.loads(side.read_text())
        t = load_tensors(path)
        done = int(t["done"]) if "done" in t else len(t["labels"])
        if done < 1:
            raise UserError(f"reference games {path} hold no finished image")
        return cls(t["images"][:done], t["labels"][:done].long(), t["indices"][:done].long(), t["values"][:done],
                   t["stderr"][:done], t["v_full"][:done], t["v_empty"][:done], meta)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows) -> "ReferenceGames":
        rows = torch.as_tensor(rows, dtype=torch.long)
        return ReferenceGames(self.images[rows], self.labels[rows], self.indices[rows], self.values[rows],
                              self.stderr[rows], self.v_full[rows], self.v_empty[rows], self.meta)

    def energy(self, players) -> torch.Tensor:
        return player_energy(self.images, players)

    def score(self, values: torch.Tensor, players) -> dict:
        """:func:`bank_quality` of ``values`` (N, P) on these games, plus the reference's own floor."""
        energy = self.energy(players)
        out = bank_quality(values, self.values, energy)
        floor = reference_floor(self.values, self.stderr, energy)
        out["floor_disagreement"], out["floor_p_relerr"] = floor["disagreement"], floor["p_relerr"]
        return out
