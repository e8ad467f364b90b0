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
