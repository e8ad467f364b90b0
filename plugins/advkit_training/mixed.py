"""Mixed-batch adversarial training: clean data, noise and any registered attacks together.

An *adversary*. Sources are ``clean``, ``noise`` (uniform in the eps-ball) and
any attack name the registry knows (``fgsm``, ``pgd``, ``cw``, ``art.pgd``,
...), each with a weight:

- ``mode=split`` (default): every batch is divided among the sources in
  proportion to the weights (largest-remainder rounding), the assignment
  shuffled within the batch. The default, ``clean=0.5,fgsm=0.25,pgd=0.25``, is
  the 50/25/25 batch mix of the mixed-batch recipe.
- ``mode=draw``: one source per batch, drawn with the weights as
  probabilities, e.g. ``mode=draw,clean=0.5,pgd=0.125,fgsm=0.125,cw=0.125,noise=0.125``.

Weights are normalised to sum to one. Attack options are given as
``NAME.PARAM=VALUE`` (``pgd.steps=20``); ``NAME.budget=EPS`` gives a source a budget of its own, at most
the training eps (``fgsm.budget=0.01``: several budgets in one run). Registered attacks maximise their own
losses, not the objective's ``attack_loss``. Their outputs go through advkit's
attack path like in an evaluation: an attack that leaves the training threat
model stops training, and a minimum-norm attack (CW, DeepFool) keeps only the
examples inside the budget; the others stay clean, and every epoch's log says
how many of each attack's examples were kept. Each step leaves
``ctx.state["mixed"] = {"names": [...], "source": LongTensor}`` saying which
source made each example.

``precompute=true`` (the fine-tuning recipe of mixed-batch training): every attack source makes its example
of every training image once, at the start of the first epoch, against the weights training starts from (a
clean model given with ``--weights``), in dataset order on the un-augmented images; every epoch then reads
them by dataset index (moved by the batch's crop and flip, projected onto the source's budget around the
image the step trains on). ``noise`` stays drawn at each step. The examples are part of the training state
(a resumed run keeps them): one float32 image per attack source and training image, in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from advkit.plugin import Defense, UserError

if TYPE_CHECKING:  # torch is imported when training starts, so that `advkit list` stays fast
    import torch

BUILTIN = ("clean", "noise")
DEFAULT = {"clean": 0.5, "fgsm": 0.25, "pgd": 0.25}


def split_counts(weights: list[float], n: int) -> list[int]:
    """Divide ``n`` items in proportion to ``weights`` (largest remainder, ties to the first)."""
    raw = [w * n for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _registered_name(name: str) -> str:
    """``apgd_ce`` -> ``apgd-ce`` when that is the registered spelling (parameter keys lose hyphens)."""
    if name in BUILTIN or "_" not in name:
        return name
    try:
        from advkit.plugin import registry as registry

        reg = registry("attack")
    except Exception:  # listing attacks must not break building the defense
        return name
    hyphen = name.replace("_", "-")
    return hyphen if name not in reg and hyphen in reg else name


class Mixed(Defense):
    """Mixed-batch training: SOURCE=weight for clean, noise or any registered attack (split or drawn per batch)."""

    def __init__(self, mode: str = "split", precompute: bool = False, **sources):
        if mode not in ("split", "draw"):
            raise UserError(f"mixed.mode must be split or draw, got {mode!r}")
        weights, options = {}, {}
        for key, value in sources.items():
            name, dot, param = key.partition(".")
            name = name.lower()
            name = _registered_name(name)
            if dot:
                options.setdefault(name, {})[param] = value
                continue
            try:
                w = float(value)
            except (TypeError, ValueError):
                raise UserError(f"mixed: weight of {key!r} must be a number, got {value!r}") from None
            if not w >= 0:
                raise UserError(f"mixed: weight of {key!r} must be >= 0, got {value!r}")
            weights[name] = w
        weights = weights or dict(DEFAULT)
        total = sum(weights.values())
        if total <= 0:
            raise UserError("mixed: at least one source needs a positive weight")
        stray = sorted(set(options) - set(weights))
        if stray:
            raise UserError(f"mixed: options given for {', '.join(stray)}, which is not among the sources")
        super().__init__(mode=mode, precompute=precompute,
                         **{**weights, **{f"{n}.{p}": v for n, o in options.items() for p, v in o.items()}})
        self.mode, self.precompute = mode, bool(precompute)
        self.names = list(weights)
        self.weights = [weights[n] / total for n in self.names]
        self.budgets = {n: _budget(n, o.pop("budget")) for n, o in options.items() if "budget" in o}
        self.options = options
        self._attacks: dict = {}
        self.examples: dict | None = None  # precompute: source name -> (N, C, H, W) perturbations by dataset index

    def _resolve(self, name: str) -> str:
        from advkit.plugin import registry as registry

        registry("attack").get(name)  # an unknown name raises the UserError listing close ones
        return name

    def setup(self, model, data, ctx):
        for name in self.names:
            if name not in BUILTIN:
                self._resolve(name)
        for name, eps in self.budgets.items():
            if eps > ctx.threat.eps:
                raise UserError(f"mixed: {name}.budget={eps:g} is above the training budget {ctx.threat}")

    def threat(self, name: str, ctx):
        """The threat model of source ``name``: the training one, at the source's own budget when it has one."""
        return ctx.threat.with_eps(self.budgets[name]) if name in self.budgets else ctx.threat

    def on_epoch_start(self, model, data, ctx):
        if self.precompute and self.examples is None:
            from advkit_training.precomputed import precompute

            attacks = [n for n in self.names if n not in BUILTIN]
            self.examples = precompute(model, data, ctx, {n: self._attack(n, model, self.threat(n, ctx)) for n in attacks})

    def state_dict(self) -> dict:
        return {f"examples.{n}": t for n, t in (self.examples or {}).items()}

    def load_state_dict(self, state: dict) -> None:
        found = {k.partition(".")[2]: v for k, v in state.items() if k.startswith("examples.")}
        self.examples = found or None

    def on_epoch_end(self, model, data, ctx):
        """Report this epoch's minimum-norm attacks: how many of their examples fitted the budget (all ranks)."""
        from advkit.plugin import all_sum
        from advkit.plugin import registry as registry

        names = [n for n in self.names if n not in BUILTIN]
        counts: list[float] = []
        for name in names:
            attacks = [atk for (n, _, _), atk in self._attacks.items() if n == name]
            counts += [sum(a.stats["points"] for a in attacks), sum(a.stats["dropped"] for a in attacks)]
            for atk in attacks:
                atk.stats.update(points=0, dropped=0)
        counts = all_sum(counts, ctx.device) if counts else []  # every rank calls it once, with the same names
        for i, name in enumerate(names):
            points, dropped = int(counts[2 * i]), int(counts[2 * i + 1])
            if points and registry("attack").get(name).can("minimum_norm"):
                ctx.report(f"mixed: {name} kept {points - dropped}/{points} examples inside {ctx.threat} "
                           f"(the others trained as clean)")

    def _attack(self, name, model, threat):
        key = (name, id(model), threat)
        if key not in self._attacks:
            from advkit.plugin import create_attack

            self._attacks[key] = create_attack(self._resolve(name), model, threat, **self.options.get(name, {}))
        return self._attacks[key]

    def assign(self, n: int, generator=None, device="cpu") -> torch.Tensor:
        """Which source makes each of ``n`` examples (indices into ``self.names``)."""
        import torch

        dev = generator.device if generator is not None else torch.device(device)
        if self.mode == "draw":
            k = torch.multinomial(torch.tensor(self.weights, device=dev), 1, generator=generator)
            return k.expand(n).clone()
        source = torch.empty(n, dtype=torch.long, device=dev)
        perm = torch.randperm(n, generator=generator, device=dev)
        start = 0
        for k, c in enumerate(split_counts(self.weights, n)):
            source[perm[start:start + c]] = k
            start += c
        return source

    def perturb(self, model, x, y, ctx):
        from advkit.plugin import project, random_start

        source = self.assign(x.shape[0], ctx.generator, x.device).to(x.device)
        x_adv = x.detach().clone()
        stored = self.examples is not None and _stored(self.examples, x, ctx)
        for k, name in enumerate(self.names):
            idx = (source == k).nonzero().flatten()
            if idx.numel() == 0 or name == "clean":
                continue
            xs, threat = x[idx].detach(), self.threat(name, ctx)
            if name == "noise":  # uniform in the ball, then into the bounds: our own draw, projected by construction
                noisy = xs + random_start(xs, threat.norm, threat.eps, "uniform", generator=ctx.generator)
                x_adv[idx] = project(xs, noisy, threat.norm, threat.eps, threat.bounds)
            elif stored:
                x_adv[idx] = project(xs, xs + stored[name][idx], threat.norm, threat.eps, threat.bounds)
            else:
                x_adv[idx] = self._attack(name, model, threat)(xs, y[idx])
        ctx.state["mixed"] = {"names": list(self.names), "source": source}
        return x_adv


def _budget(name: str, value) -> float:
    from advkit.plugin import parse_eps

    eps = parse_eps(value)
    if not eps > 0:
        raise UserError(f"mixed: {name}.budget must be > 0, got {value!r}")
    return eps


def _stored(examples: dict, x, ctx) -> dict:
    """This batch's precomputed perturbations per source, moved by its crop and flip."""
    if ctx.index is None:
        raise UserError("mixed: precompute needs the dataset indices of each batch (ctx.index), which the engine gave none of")
    move = ctx.state.get("augmentation")
    out = {}
    for name, delta in examples.items():
        d = delta[ctx.index.to(delta.device)].to(x.device, x.dtype)
        out[name] = move(d) if move is not None else d
    return out
