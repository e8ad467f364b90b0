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
TRADES loss (PART-T). The full contract (attributes the engine reads, the
lifecycle, the context and its ``state`` keys) is on :class:`Defense` and
:class:`TrainContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advkit._internal.errors import UserError

if TYPE_CHECKING:  # torch is imported lazily so that `advkit list` stays fast
    import torch

POINTS = ("model", "data", "adversary", "objective")
_METHODS = {"model": "transform_model", "data": "transform_batch", "adversary": "perturb", "objective": "loss"}


@dataclass
class TrainContext:
    """What the training engine tells defenses, fixed for the run or updated at each step.

    - ``threat``: the training :class:`~advkit._internal.threat.ThreatModel`; ``device``.
    - ``epoch`` (0-based), ``epochs``, ``step`` (global step count), ``index``:
      the dataset indices of the batch (stable under shuffling: key per-sample
      state by them).
    - ``attack_loss(logits_adv, logits_clean, y)``: the objective's loss, which
      any adversary should maximise; its ``uses_clean`` attribute says whether it
      reads ``logits_clean`` (pass ``None`` when it does not).
    - ``adversary``: the :class:`~advkit._internal.adversary.PGDSettings` the objective's
      own adversary uses (an adversary defense that runs a PGD, such as PART's,
      takes its steps, step size and start from here).
    - ``generator``: the step's random generator (seeded from seed, epoch,
      step and rank): draw every random choice from it to stay reproducible.
    - ``cache_dir``: where preparation may cache files (None without ``out``);
      ``quiet``: no progress bars; ``report(message)``: print a line in the
      training log (the engine adds it to the epoch's metrics too).
    - ``state``: a dict shared by the defenses for one step. Keys the engine
      reads or sets: ``"eps_map"`` (set by an adversary: a per-pixel Linf budget
      the engine verifies the batch against; cleared every step),
      ``"augmentation"`` (set by the engine: a function applying this batch's
      crop and flip to any tensor shaped like it, or None).
    - ``label_smoothing``: set by a modifier defense (``label-smoothing``) in
      its ``setup``; an objective applies it by computing each cross-entropy
      term with :meth:`cross_entropy`. The engine stops the run when label
      smoothing is set and the objective's loss never called it.
    """

    threat: Any
    device: torch.device
    epoch: int = 0
    epochs: int = 1
    step: int = 0
    index: torch.Tensor | None = None
    attack_loss: Any = None
    adversary: Any = None
    generator: torch.Generator | None = None
    cache_dir: str | None = None
    quiet: bool = False
    state: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    label_smoothing: float = 0.0
    smoothing_used: bool = False

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``logits`` against ``y`` with the run's ``label_smoothing``."""
        import torch.nn.functional as F

        self.smoothing_used = True
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def report(self, message: str) -> None:
        """A line for the training log of this epoch (e.g. how many examples an adversary kept)."""
        self.notes.append(str(message))


class Defense:
    """Base class of training-time defenses.

    Override any of the four points (``transform_model``, ``transform_batch``,
    ``perturb``, ``loss``; see the module docstring). Lifecycle: the factory
    builds it from the user's parameters; ``transform_model`` runs once before
    the optimizer is built (and again when a checkpoint is loaded, so the
    weights fit); ``setup`` once before the first epoch; ``on_epoch_start`` at
    every epoch start and ``on_epoch_end`` at its end; then per step the points in the order data, adversary
    (model in eval mode, weights frozen), objective (train mode).
    ``state_dict``/``load_state_dict`` carry what must survive a resume.

    Attributes the engine reads:

    - ``name``: set from the registered name;
    - ``stochastic``: the model stays random at test time (LWTA, noise
      injection): checkpoints say so and evaluation becomes adaptive;
    - ``needs_adversary`` (objectives): the loss needs adversarial examples;
      when no defense owns the adversary point the engine runs
      ``default_adversary()`` (or the default training PGD);
    - ``default_adversary()`` (objectives): the adversary this objective's paper
      uses (e.g. TRADES: small Gaussian start); its settings become
      ``ctx.adversary``;
    - ``attack_loss`` (objectives): see :class:`TrainContext`.

    A defense may override no point at all and only adjust the context in
    ``setup`` (a *modifier*: ``label-smoothing`` sets ``ctx.label_smoothing``),
    so that it composes with any objective. An objective computes its
    cross-entropy terms with ``ctx.cross_entropy`` so that such a modifier
    reaches them.
    """

    name: str = ""
    stochastic: bool = False
    needs_adversary: bool = False

    def default_adversary(self) -> "Defense | None":
        """The adversary this objective uses when no defense owns the adversary point (None: the engine's PGD)."""
        return None

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
        """Cross-entropy (``ctx.cross_entropy``) on ``x_adv`` when an adversary ran, else on ``x``."""
        return ctx.cross_entropy(model(x if x_adv is None else x_adv), y)

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

    def on_epoch_end(self, model, data, ctx: TrainContext) -> None:
        """Called at the end of every epoch, before validation (e.g. to ``ctx.report`` what happened)."""

    def state_dict(self) -> dict:
        """Tensors to keep in the training state for resumption (masks, banks...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def create_defense(spec: str, **params) -> Defense:
    """Build a defense from ``"name"`` or ``"name:key=value,..."`` (plus keyword parameters)."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import bind_params, parse_spec

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
