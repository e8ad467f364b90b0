"""CSA, class-wise Shapley value-guided augmentation, as a *data* defense.

Each training image ``X`` of class ``y`` becomes
``clamp(real(IFFT(F(X) + alpha * p)), 0, 1) = clamp(X + alpha * real(IFFT(p)), 0, 1)``
with ``p`` drawn uniformly (``ctx.generator``) from the NFC bank of class
``y`` (:mod:`advkit_csa.bank`). CSA owns only the data point, so it composes
with an adversary/objective such as ``pgd-at`` or ``trades``, which then attack
the augmented image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that use it, so that `advkit list` stays fast
    import torch

from advkit.plugin import Defense, TrainContext, UserError

SCHEDULES = ("constant", "linear")
ESTIMATORS = ("gradient", "permutation")  # as in advkit_csa.bank, which imports torch


def standard_pretrained(dataset: str) -> str | None:
    """A registered checkpoint trained on ``dataset`` without defenses (as its registration declares), if any."""
    from advkit.plugin import registry

    for entry in registry("backbone"):
        if dataset and entry.can("trained_on") == dataset and entry.capabilities.get("defenses", ()) == ():
            return entry.name
    return None


def default_cache_dir() -> Path:
    root = os.environ.get("ADVKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "advkit")
    return Path(root) / "csa"


class CSA(Defense):
    """Class-wise Shapley value-guided augmentation: add alpha x the NFC of a same-class image (Chen et al., 2022)."""

    def __init__(self, alpha: float = 0.5, bank: str | None = None, pretrained: str | None = None, per_class: int = 150,
                 estimator: str = "gradient", pairs: int = 512, target_loss: float = 0.003, permutations: int = 64,
                 target_se: float | None = None, grid: str | None = None, schedule: str = "constant",
                 batch_size: int | None = None, seed: int = 0):
        super().__init__(alpha=alpha, bank=bank, pretrained=pretrained, per_class=per_class, estimator=estimator,
                         pairs=pairs, target_loss=target_loss, permutations=permutations, target_se=target_se, grid=grid,
                         schedule=schedule, batch_size=batch_size, seed=seed)
        if not float(alpha) >= 0:
            raise UserError(f"csa.alpha must be >= 0, got {alpha!r}")
        if schedule not in SCHEDULES:
            raise UserError(f"csa.schedule must be one of {SCHEDULES}, got {schedule!r}")
        if estimator not in ESTIMATORS:
            raise UserError(f"csa.estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if int(per_class) < 1 or int(permutations) < 1 or int(pairs) < 2:
            raise UserError("csa.per_class and csa.permutations must be >= 1, csa.pairs >= 2")
        self.alpha = float(alpha)
        self.schedule = schedule
        self.bank = None
        self.bank_path: Path | None = None
        self._spatial = self._start = self._count = None

    # ------------------------------------------------------------------ setup

    def _pretrained(self, data, device):
        from advkit.plugin import load_model

        spec = self.params["pretrained"]
        name = getattr(getattr(data, "info", None), "name", "")
        if spec is None:
            spec = standard_pretrained(name)
            if spec is None:
                raise UserError("csa needs a pretrained model to build its NFC bank: pass csa:pretrained=CHECKPOINT "
                                "(or a prebuilt bank with csa:bank=PATH, see 'advkit csa-bank')")
        return load_model(spec, dataset=data.info, device=device)

    def setup(self, model, data, ctx: TrainContext) -> None:
        from advkit_csa.bank import NFCBank, build_bank
        from advkit_csa.grid import parse_grid

        p = self.params
        if p["bank"]:
            self.bank, self.bank_path = NFCBank.load(p["bank"]), Path(p["bank"])
        else:
            pretrained = self._pretrained(data, ctx.device)
            out = Path(ctx.cache_dir) if ctx.cache_dir else default_cache_dir()
            self.bank, self.bank_path = build_bank(
                pretrained, data, out=out, per_class=int(p["per_class"]), estimator=p["estimator"], pairs=int(p["pairs"]),
                target_loss=float(p["target_loss"] or 0) or None,  # 0: never stop early
                permutations=int(p["permutations"]), target_se=p["target_se"], grid=parse_grid(p["grid"]),
                batch_size=p["batch_size"], seed=int(p["seed"]), progress=not ctx.quiet)
        self._index(data, ctx.device)

    def _index(self, data, device) -> None:
        import torch

        bank = self.bank
        shape = list(getattr(getattr(data, "info", None), "input_shape", bank.meta.get("input_shape")))
        if list(bank.meta.get("input_shape", shape)) != shape:
            raise UserError(f"csa: the bank {self.bank_path} is for images {bank.meta.get('input_shape')}, the data are {shape}")
        classes = getattr(getattr(data, "info", None), "num_classes", bank.num_classes)
        counts = torch.bincount(bank.labels, minlength=classes)
        if (counts[:classes] == 0).any():
            missing = (counts[:classes] == 0).nonzero().flatten().tolist()
            raise UserError(f"csa: the bank {self.bank_path} has no entry for classes {missing}")
        order = torch.argsort(bank.labels, stable=True)
        self._spatial = bank.spatial()[order].to(device)
        self._count = counts.to(device)
        self._start = (torch.cumsum(counts, 0) - counts).to(device)

    # ------------------------------------------------------------------ the data point

    def alpha_at(self, epoch: int, epochs: int) -> float:
        """``alpha`` (constant), or ramped up linearly over the epochs to ``alpha`` (linear)."""
        if self.schedule == "linear":
            return self.alpha * (epoch + 1) / max(int(epochs), 1)
        return self.alpha

    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Indices into the (class-sorted) bank: one random entry of class ``y[i]`` per sample."""
        import torch

        if self._spatial is None:
            raise RuntimeError("csa: setup() has not run (no bank loaded)")
        y = y.to(self._count.device)
        u = torch.rand(y.shape[0], generator=generator, device=generator.device if generator is not None else y.device)
        pick = (u.to(y.device) * self._count[y]).long().clamp_max(self._count[y] - 1)
        return self._start[y] + pick

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, ctx: TrainContext):
        alpha = self.alpha_at(ctx.epoch, ctx.epochs)
        if alpha == 0:
            return x, y
        noise = self._spatial[self.sample(y, ctx.generator)].to(x.device, x.dtype)
        return (x + alpha * noise).clamp_(0, 1), y

    def state_dict(self) -> dict:
        return {"bank_key": self.bank.meta.get("key", "") if self.bank is not None else ""}
