"""The defense contract: four points at which a defense changes training.

A :class:`Defense` overrides any of

- ``transform_model(backbone) -> backbone``   *model*: e.g. LWTA activations, noise injection;
- ``transform_batch(x, y, ctx) -> (x, y)``     *data*: e.g. CSA augmentation;
- ``perturb(model, x, y, ctx) -> x_adv``       *adversary*: e.g. PGD, PART, mixed-batch;
- ``loss(model, x, x_adv, y, ctx) -> loss``    *objective*: e.g. CE on x_adv, TRADES, MART;

and may prepare state with ``setup(model, data, ctx)`` and ``on_epoch_start(model, data, ctx)``
(CSA's Shapley bank, PART's CAM masks). The training engine composes them;
two defenses that override the same point are refused, except the *data*
point, where transforms apply in order.

An objective says which loss its adversary should maximise through
``attack_loss(logits_adv, logits_clean, y)`` (cross-entropy by default; KL for
TRADES), so ``--defense trades --defense part`` runs PART's adversary on the
TRADES loss (PART-T).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advkit.errors import UserError

if TYPE_CHECKING:  # torch is imported lazily so that `advkit list` stays fast
    import torch

POINTS = ("model", "data", "adversary", "objective")
_METHODS = {"model": "transform_model", "data": "transform_batch", "adversary": "perturb", "objective": "loss"}


@dataclass
class TrainContext:
    """What the engine tells defenses about the current step."""

    threat: Any
    device: torch.device
    epoch: int = 0
    epochs: int = 1
    step: int = 0
    index: torch.Tensor | None = None  # dataset indices of the batch (stable under shuffling)
    attack_loss: Any = None  # the objective's loss for the adversary
    generator: torch.Generator | None = None
    cache_dir: str | None = None
    quiet: bool = False
    state: dict = field(default_factory=dict)


class Defense:
    """Base class of training-time defenses; see the module docstring."""

    name: str = ""
    stochastic: bool = False  # the model stays random at test time (evaluate adaptively)

    def __init__(self, **params):
        self.params = params

    @property
    def points(self) -> tuple[str, ...]:
        """The points this defense overrides."""
        return tuple(p for p, m in _METHODS.items() if getattr(type(self), m) is not getattr(Defense, m))

    def recipe(self) -> dict:
        """How to rebuild this defense (stored in checkpoints)."""
        return {"name": self.name, "params": dict(self.params)}

    # the four points (defaults do nothing)
    def transform_model(self, backbone: torch.nn.Module) -> torch.nn.Module:
        return backbone

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, ctx: TrainContext):
        return x, y

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, ctx: TrainContext) -> torch.Tensor:
        return x

    def loss(self, model, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor, ctx: TrainContext) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(model(x if x_adv is None else x_adv), y)

    def attack_loss(self, logits_adv: torch.Tensor, logits_clean: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """The loss the adversary maximises. An override that reads ``logits_clean`` keeps ``uses_clean``
        true (the default for any function); this one does not, so adversaries may pass ``None``."""
        import torch.nn.functional as F

        return F.cross_entropy(logits_adv, y)

    attack_loss.uses_clean = False

    # preparation hooks
    def setup(self, model, data, ctx: TrainContext) -> None:
        """Called once before training (after the model transforms)."""

    def on_epoch_start(self, model, data, ctx: TrainContext) -> None:
        """Called at the start of every epoch."""

    def state_dict(self) -> dict:
        """Tensors to keep in the training state for resumption (masks, banks...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def create_defense(spec: str, **params) -> Defense:
    """Build a defense from ``"name"`` or ``"name:key=value,..."`` (plus keyword parameters)."""
    from advkit.plugins import registry
    from advkit.registry import bind_params, parse_spec

    name, spec_params = parse_spec(spec)
    entry = registry("defense").get(name)
    defense = entry.factory(**bind_params(entry, {**spec_params, **params}))
    if not isinstance(defense, Defense):
        raise TypeError(f"defense factory {entry.qualified!r} returned {type(defense).__name__}, not a Defense")
    defense.name = defense.name or entry.name
    return defense


def compose(defenses: list[Defense]) -> dict[str, Defense | list[Defense]]:
    """Assign each point to at most one defense (data transforms chain); refuse conflicts."""
    owner: dict[str, Any] = {"data": []}
    for d in defenses:
        for p in d.points:
            if p == "data":
                owner["data"].append(d)
            elif p in owner:
                raise UserError(
                    f"defenses {owner[p].name!r} and {d.name!r} both set the {p} point; keep one of them"
                )
            else:
                owner[p] = d
    return owner
