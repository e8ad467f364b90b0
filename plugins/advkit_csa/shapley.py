"""Shapley values of frequency players by permutation sampling (our own implementation).

No library computes Shapley values over DFT blocks with batched coalition
chains, so this estimator is ours. For an image ``x`` of class ``y`` the game
is ``v(S) = f(clamp(real(IFFT(mask_S * F(x))), 0, 1))_y`` with ``f`` the
softmax probability (``value="prob"``) or the logit (``value="logit"``) and the
players of :mod:`advkit_csa.players` (the DC cell always kept).

Estimator. Each permutation of the ``P`` players gives ``P + 1`` nested
coalitions; the marginal of a player is the change of ``v`` when it joins, so
the marginals of one permutation telescope to ``v(all) - v(empty)`` and every
estimate is exactly efficient. Variance reduction:

- *antithetic pairs*: each permutation is evaluated with its reverse, whose
  coalitions are the complements; the sampling unit is the pair (averaged);
- *control variate* (``value="prob"``, from 8 units per image on): the
  surrogate game ``g`` of :mod:`advkit_csa.surrogate` (softmax of the additive
  logit game fitted from the sampled logit increments) is used as
  ``phi = beta * phi_g + mean(d - beta * g)``, with ``d``/``g`` the per-unit
  marginals of the model and of ``g`` on the same permutations and ``phi_g``
  the Shapley values of ``g``, computed without model calls. The surrogate used
  on one half of the units is fitted on the other half (cross-fitting).
  ``beta`` is the least-squares coefficient, a single number per image and
  half, so efficiency still holds exactly (both ``phi_g`` and ``mean(g)`` sum to
  ``g(all) - g(empty)``); estimating it in-sample costs a bias of order
  ``1/units``, far below the standard error.

Standard errors come from the spread of the per-unit marginals (per pair,
per half), plus the Monte-Carlo error of ``phi_g``.

Chains are evaluated as large batches: per image the ``P`` single-player
reconstructions are computed once with ``torch.fft``, a permutation's chain of
images is their cumulative sum (and ``full - cumsum`` for its reverse), and the
forward passes of many permutations and images go through the model in
batches of ``batch_size`` under ``torch.inference_mode``
(:mod:`advkit_csa.sampler`). Sampling stops after
``permutations`` permutations per image, or earlier for an image whose largest
standard error is at most ``target_se``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from dataclasses import dataclass, field

import torch

from advkit.plugin import UserError
from advkit.plugin import progress as progress_bar
from advkit_csa.chains import _value  # noqa: F401  (re-exported: the explainer and the exact solver import it from here)
from advkit_csa.players import FrequencyPlayers
from advkit_csa.sampler import GroupSampler, Schedule

VALUES = ("prob", "logit")


@dataclass
class ShapleyResult:
    """Per-image frequency Shapley values.

    ``values``/``stderr``: (N, P) per player; ``v_full``/``v_empty``: (N,) the
    game on all players and on none (the centre cell only);
    ``permutations``/``passes``: (N,) permutations sampled and forward passes
    spent per image; ``players``: the layout (see :meth:`spectrum`);
    ``timing``: wall-clock seconds in total and inside the model's forward.
    """

    values: torch.Tensor
    stderr: torch.Tensor
    v_full: torch.Tensor
    v_empty: torch.Tensor
    permutations: torch.Tensor
    passes: torch.Tensor
    players: FrequencyPlayers
    settings: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    def spectrum(self, what: str = "values") -> torch.Tensor:
        """(N, 1, H, W) per-player numbers upsampled to the centred spectrum (centre cell 0)."""
        return self.players.to_spectrum(getattr(self, what)).unsqueeze(1)

    def efficiency_gap(self) -> torch.Tensor:
        """(N,) ``sum(values) - (v_full - v_empty)``: zero up to rounding."""
        return self.values.sum(1) - (self.v_full - self.v_empty)


def image_seed(seed: int, index: int, *keys) -> int:
    digest = hashlib.sha256(repr(("freq-shapley", int(seed), int(index)) + keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _device_of(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class _Forward:
    """The model under inference, in slices of ``batch_size``, counting passes and time."""

    def __init__(self, model, batch_size: int):
        self.model, self.batch_size, self.calls, self.seconds = model, int(batch_size), 0, 0.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.clamp_(0, 1)
        t = time.perf_counter()
        outs = [self.model(images[i : i + self.batch_size]) for i in range(0, images.shape[0], self.batch_size)]
        if outs and outs[0].is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.calls += images.shape[0]
        return torch.cat(outs).float() if outs else images.new_zeros(0, 0)


@dataclass(frozen=True)
class ShapleySettings:
    """How :func:`frequency_shapley` samples; each field can also be given to it as a keyword.

    ``permutations``: the budget per image, in full permutations, i.e. about
    ``permutations * (P - 1)`` forward passes (an antithetic pair counts as 2);
    with ``adaptive`` a ``pilot_share`` of it goes to full permutations and the
    rest to focused ones. ``target_se`` stops an image once its largest
    standard error is at most this (checked every ``round_permutations``).
    ``value``: the game, ``"prob"`` or ``"logit"``; ``antithetic``: evaluate
    each permutation with its reverse; ``control_variate`` applies to
    ``value="prob"`` only: the Shapley values of its surrogate take enough
    Monte-Carlo pairs for their variance to be about ``1 / surrogate_ratio``
    of the estimate's (at least 64, capped at ``max_surrogate_pairs``).
    ``batch_size``: coalition images per model call.
    """

    permutations: int = 64
    target_se: float | None = None
    value: str = "prob"
    antithetic: bool = True
    control_variate: bool = True
    adaptive: bool = True
    pilot_share: float = 0.25
    batch_size: int = 1024
    round_permutations: int = 16
    surrogate_ratio: float = 10.0
    max_surrogate_pairs: int = 20000

    @property
    def use_cv(self) -> bool:
        """Whether the control variate is used (``value="prob"`` only)."""
        return bool(self.control_variate) and self.value == "prob"

    @property
    def per_unit(self) -> int:
        """Permutations per sampling unit: 2 for an antithetic pair."""
        return 2 if self.antithetic else 1

    def check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise :class:`UserError` on a setting out of range or images and labels of the wrong shapes."""
        if self.value not in VALUES:
            raise UserError(f"freq-shapley: value must be one of {VALUES}, got {self.value!r}")
        if int(self.permutations) < 1:
            raise UserError(f"freq-shapley: permutations must be >= 1, got {self.permutations!r}")
        if self.target_se is not None and not float(self.target_se) > 0:
            raise UserError(f"freq-shapley: target_se must be > 0, got {self.target_se!r}")
        if int(self.batch_size) < 1:
            raise UserError(f"freq-shapley: batch_size must be >= 1, got {self.batch_size!r}")
        if not 0 < float(self.pilot_share) <= 1:
            raise UserError(f"freq-shapley: pilot_share must lie in (0, 1], got {self.pilot_share!r}")
        if x.dim() != 4 or y.shape != x.shape[:1]:
            raise UserError(f"freq-shapley: expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")

    def record(self, players: FrequencyPlayers, seed: int) -> dict:
        """The settings as :attr:`ShapleyResult.settings` reports them."""
        return {"grid": list(players.grid), "players": players.num_players, "value": self.value,
                "antithetic": bool(self.antithetic), "control_variate": self.use_cv, "adaptive": bool(self.adaptive),
                "permutations": int(self.permutations), "target_se": self.target_se, "seed": int(seed)}


def frequency_shapley(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grid: tuple[int, int] | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    indices=None,
    progress: bool = True,
    settings: ShapleySettings | None = None,
    **options,
) -> ShapleyResult:
    """Estimate the frequency Shapley values of ``model`` on images ``x`` (N, C, H, W in [0, 1]) of classes ``y``.

    How it samples: ``settings`` (default: :class:`ShapleySettings`'
    defaults), with any of its fields given as keywords instead (``options``:
    ``permutations``, ``target_se``, ``value``, ``antithetic``,
    ``control_variate``, ``adaptive``, ``pilot_share``, ``batch_size``,
    ``round_permutations``, ``surrogate_ratio``, ``max_surrogate_pairs``),
    which take precedence. ``grid``: the player grid (default 2x2 blocks).
    ``seed`` (or a ``generator`` it is drawn from) and ``indices`` (stable
    per-image ids, default ``0..N-1``) fix every random choice; an image's
    values do not depend on the rest of the batch.
    """
    settings = dataclasses.replace(settings if settings is not None else ShapleySettings(), **options)
    settings.check(x, y)
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    players = FrequencyPlayers(tuple(x.shape[-2:]), grid)
    indices = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    schedule = Schedule.of(settings, players.num_players, x[0].numel())
    fwd = _Forward(model, settings.batch_size)
    t_start = time.perf_counter()
    out = _sample_all(model, x, y, players, schedule, fwd, functools.partial(image_seed, seed), indices, progress)
    timing = {"total_s": time.perf_counter() - t_start, "forward_s": fwd.seconds, "passes": fwd.calls}
    return ShapleyResult(**out, players=players, settings=settings.record(players, seed), timing=timing)


def _sample_all(model, x, y, players, schedule: Schedule, fwd: _Forward, seed_of, indices: list[int], progress: bool) -> dict:
    """Sample every image, a group at a time, with ``model`` in eval and inference mode; the per-image tensors."""
    n, p = x.shape[0], players.num_players
    device = _device_of(model)
    out = {"values": torch.zeros(n, p), "stderr": torch.zeros(n, p), "v_full": torch.zeros(n), "v_empty": torch.zeros(n),
           "permutations": torch.zeros(n, dtype=torch.long), "passes": torch.zeros(n, dtype=torch.long)}
    bar = progress_bar(n * (schedule.budget + 2), "freq-shapley", quiet=not progress, unit="pass")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, schedule.group):
                rows = slice(start, start + schedule.group)
                group = GroupSampler(schedule, fwd, bar, seed_of, players, x[rows].to(device).float(),
                                     y[rows].to("cpu").long(), indices[rows], device)
                group.run()
                group.write(out, start)
    finally:
        bar.close()
        model.train(was_training)
    return out
