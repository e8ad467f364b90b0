"""Building attacks from the registry: ``create_attack("pgd", model, eps="8/255")``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from advkit.plugins import registry
from advkit.registry import Entry, bind_params
from advkit.threat import ThreatModel


@dataclass
class Attack:
    """A registered attack bound to a model and a threat model: ``attack(x, y) -> x_adv``.

    Calls go straight to the plugin's callable; the evaluation engine verifies
    each result against ``threat``.
    """

    name: str
    entry: Entry
    threat: ThreatModel
    params: dict[str, Any]
    fn: Any
    implementation: str = ""
    black_box: bool = False
    extra: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(x, y)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "provider": self.entry.provider,
            "implementation": self.implementation,
            "params": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in self.params.items()},
            **self.extra,
        }


def create_attack(
    name: str,
    model: torch.nn.Module,
    threat: ThreatModel | None = None,
    *,
    eps=None,
    norm: str | None = None,
    **params,
) -> Attack:
    """Build the attack ``name`` (any registered name, alias or ``provider.name``) for ``model``.

    ``threat`` defaults to Linf 8/255; ``eps`` and ``norm`` override its parts.
    Remaining keyword arguments are the attack's own parameters (strings are
    converted to the type of the default, as on the command line).
    """
    threat = threat or ThreatModel()
    if eps is not None or norm is not None:
        threat = ThreatModel.parse(norm or threat.norm, eps if eps is not None else threat.eps, bounds=threat.bounds)
    entry = registry("attack").get(name)
    kwargs = bind_params(entry, params)
    fn = entry.factory(model, threat, **kwargs)
    impl = getattr(fn, "implementation", "") or f"{entry.package} {entry.version}".strip()
    extra = dict(getattr(fn, "report", {}) or {})
    return Attack(
        name=name.lower(),
        entry=entry,
        threat=threat,
        params=kwargs,
        fn=fn,
        implementation=impl,
        black_box=bool(getattr(fn, "black_box", False)),
        extra=extra,
    )
