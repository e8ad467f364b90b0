"""Random models: how advkit tells one (a probe), attacks it (EOT, or an attack's declared adaptive counterpart).

Shared by the evaluation and the training engine's validation.
"""

from __future__ import annotations

import torch
from torch import nn

from advkit._internal.plugins import registry


class EOTModel(nn.Module):
    """Expectation over transformation: the mean of ``samples`` forward passes of a random model."""

    def __init__(self, model: nn.Module, samples: int = 20):
        super().__init__()
        self.model = model
        self.samples = samples

    def forward(self, x):
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)


def adaptive_name(name: str, stochastic: bool) -> str:
    """The attack to run for ``name``: its declared adaptive counterpart on a stochastic model."""
    counterpart = registry("attack").get(name).can("adaptive") if stochastic else None
    return counterpart or name


def _agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


def stochasticity(model, x: torch.Tensor, who: str, declared: bool) -> tuple[bool, str]:
    """``(random?, note)``: forward passes on ``x`` disagree (NaN logits count as the same).

    Two passes suffice for a model that declares nothing; a model that declares
    itself random gets four before it is called deterministic. ``note`` says when
    the probe overrules the declaration ("" otherwise).
    """
    from advkit._internal.evaluation.probes import forward_named as _forward

    first = _forward(model, x, who)
    passes = 4 if declared else 2
    random = any(not _agree(first, _forward(model, x, who)) for _ in range(passes - 1))
    note = ""
    if declared and not random:
        note = (f"{who} is declared stochastic, but {passes} forward passes on {len(x)} points agree: "
                f"evaluated as deterministic")
    return random, note


def draws_per_point(model, x: torch.Tensor, copies: int = 8) -> bool:
    """Does one forward pass give every point its own random draw? ``copies`` copies of one point in one
    batch: rows that differ say yes; identical rows (a draw per batch, as weight noise makes) say no."""
    with torch.inference_mode():
        out = model(x[:1].expand(copies, *x.shape[1:]).contiguous())
    return not all(_agree(out[0], out[k]) for k in range(1, copies))


class Judge:
    """How the evaluation decides whether a point is classified correctly: over ``draws`` random draws.

    A deterministic model is judged once per batch (``draws`` 1). A random model is
    judged over ``draws`` forward passes, each point's prediction from a draw of its
    own: in one batch when the model draws per point already (stochastic
    activations), one point at a time when it draws once per batch (weight noise).
    A point's score is the share of draws that classify it correctly. advkit's own
    (no library judges a random model per point).
    """

    def __init__(self, model, draws: int = 1, per_point: bool = True):
        self.model, self.draws, self.per_point = model, int(draws), per_point

    @property
    def how(self) -> str:
        return "one batch per draw" if self.per_point else "one point at a time, as the model draws once per batch"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """One draw for every point of ``x``."""
        if self.per_point or len(x) == 1:
            return self.model(x)
        return torch.cat([self.model(x[i : i + 1]) for i in range(len(x))])

    def scores(self, x: torch.Tensor, y: torch.Tensor, check=None, tick=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prediction of the first draw, share of the draws that are correct)`` per point; ``check(logits)``
        sees every draw's logits (the evaluation stops on NaN); ``tick(share)`` hears of every draw done."""
        with torch.inference_mode():
            hits, first = torch.zeros(len(x), device=x.device), None
            for _ in range(self.draws):
                out = self.logits(x)
                if check is not None:
                    check(out)
                pred = out.argmax(1)
                first = pred if first is None else first
                hits += (pred == y).float()
                if tick is not None:
                    tick(1 / self.draws)
        return first, hits / self.draws
