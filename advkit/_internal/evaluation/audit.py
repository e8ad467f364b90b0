"""``advkit eval --audit``: the registered checks on a seeded sample, their cost announced first.

``--audit`` takes ``all`` (the default) or check names, and ``n`` (the sample,
100 clean-correct points by default): ``--audit all:n=200``,
``--audit gradients,silent-success``. Every check comes from the
``advkit_register_checks`` hook (:mod:`advkit._internal.audit`); the checks run in
registration order on the same sample, through :class:`AuditContext`, whose
attacks go through the run's verified, logged and resumable runner. A check that
raises stops the run with one line naming it.
"""

from __future__ import annotations

import random
import sys

import torch
import torch.nn.functional as F
from torch import nn

from advkit._internal import distributed as D
from advkit._internal.attack import create_attack
from advkit._internal.cost import declared
from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.evaluation.inputs import say
from advkit._internal.evaluation.runner import swapped_threat
from advkit._internal.grammar import parse_list
from advkit._internal.passes import Passes
from advkit._internal.plugins import registry
from advkit._internal.progress import format_seconds
from advkit._internal.registry import bind_params
from advkit._internal.seeds import derive_seed

SAMPLE = 100
# On a CPU an audit attack's batch holds at most this many declared forward passes (10-30 minutes for a small
# network), so that an interrupted audit resumes near where it stopped: a black-box attack through EOT declares up
# to 100,000 per point. Fixed, not measured, so that the batches, and with them the seeds, are the same every run.
CPU_BATCH_PASSES = 250_000


def parse_audit(spec) -> tuple[list[str] | None, int] | None:
    """``True``/``"all"`` -> every check; ``"a,b:n=50"`` -> those checks on one sample of 50 points (``n`` given
    once, after any check: it is the audit's); ``None``/``False`` -> no audit."""
    if spec is None or spec is False or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    items = parse_list("all" if spec is True else spec)
    names, sizes = [], set()
    for name, params in items:
        unknown = set(params) - {"n"}
        if unknown:
            raise UserError(f"--audit {spec!r}: unknown option {sorted(unknown)[0]!r} (the audit takes n=POINTS)")
        if "n" in params:
            if not params["n"].isdigit() or int(params["n"]) < 1:
                raise UserError(f"--audit {spec!r}: n must be a positive whole number")
            sizes.add(int(params["n"]))
        if name != "all":
            names.append(registry("check").get(name).name)  # unknown names: one line with the closest
    if len(sizes) > 1:
        raise UserError(f"--audit {spec!r}: every check runs on one sample, but n is given as "
                        f"{' and '.join(map(str, sorted(sizes)))}: give it once")
    every = any(name == "all" for name, _ in items)  # "all,silent-success" is every check, not one
    return (None if every else names or None), sizes.pop() if sizes else SAMPLE


class Recorder(nn.Module):
    """The model as an attack sees it, recording per sample point the margin (true logit minus the best other)
    of every forward pass on an input inside that point's ball: the point's trajectory under the attack."""

    def __init__(self, model, x, y, threat):
        super().__init__()
        self.model, self.x, self.y, self.threat = model, x, y, threat
        self.margins: list[list[float]] = [[] for _ in range(len(x))]

    def forward(self, inp):
        out = self.model(inp)
        with torch.no_grad():
            rows = inp.detach().reshape(len(inp), -1)
            dist = torch.cdist(rows, self.x.reshape(len(self.x), -1),
                               p={"Linf": float("inf"), "L2": 2.0, "L1": 1.0}[self.threat.norm])
            near, owner = dist.min(1)
            y = self.y[owner]
            true = out.gather(1, y[:, None]).squeeze(1)
            other = out.scatter(1, y[:, None], float("-inf")).amax(1)
            for r in (near <= self.threat.eps * (1 + 1e-4) + 1e-6).nonzero().flatten().tolist():
                self.margins[int(owner[r])].append(float(true[r] - other[r]))
        return out


class AuditContext:
    """What a check may use: the sample and its tensors, the threat model, the model as attacks see it, and
    attacks run through the evaluation's verified path. See docs/plugins.md for each member."""

    def __init__(self, s, points: list[int], seed: int, surrogate=None):
        self._s, self.seed = s, seed
        self._surrogate, self.used_surrogate = surrogate, False
        self.points = points
        self.x, self.y = s.inputs.x[points], s.inputs.y[points]
        self.threat = s.inputs.threat
        self.model = s.eval_model  # what gradient attacks see (the EOT average on a random model)
        self.stochastic, self.draws = s.stochastic, s.draws
        self.eot = s.eval_model.samples if hasattr(s.eval_model, "samples") else 1
        self.device = s.runner.device
        self._cut: set[str] = set()  # attacks whose batches were cut, said once each
        self.memo: dict = {}  # for checks to share work (a traced attack run, a cost already counted)
        self.spent = Passes()  # passes of the check now running (its attacks' read back for resumed batches)

    @property
    def surrogate(self):
        """The run's ``--surrogate`` model, or None (reading it marks the surrogate as used)."""
        self.used_surrogate = True
        return self._surrogate

    @property
    def num_classes(self) -> int:
        self.spent = self.spent + Passes(1, 0, 1, 0)
        with torch.inference_mode():
            return int(self._s.model(self.x[:1].to(self.device)).shape[1])

    def clean_score(self, i: int) -> float:
        return self._s.clean[i]

    def reference(self, role: str) -> str:
        """The attack registered as the ``role`` reference (``"white-box"``, ``"black-box"`` or ``"margin"``)."""
        found = registry("attack").with_capability("reference", role)
        if not found:
            raise UserError(f"--audit and --adaptive need a {role} reference attack and no plugin registers one")
        return found[0].name

    def options(self, name: str) -> dict:
        """The run's ``--attack-opt`` parameters for attack ``name`` (given under its name or an alias)."""
        entry, opts = registry("attack").get(name), {}
        for key in dict.fromkeys((name, entry.name, *entry.aliases)):
            opts.update(self._s.inputs.attack_opts.get(key, {}))
        return opts

    def iterations(self, name: str) -> str | None:
        """The parameter that sets attack ``name``'s iterations (its declared ``iterations``), or None."""
        return registry("attack").get(name).capabilities.get("iterations")

    def parameter(self, name: str, param: str):
        """The value attack ``name`` runs with for ``param``: the run's ``--attack-opt``, else its default."""
        opts = self.options(name)
        if param in opts:
            return opts[param]
        return next((p.default for p in registry("attack").get(name).params if p.name == param), None)

    def declared(self, name: str, **params) -> Passes:
        """The worst-case passes per point of attack ``name`` with ``params`` (EOT included)."""
        per = declared(create_attack(name, self.model, self.threat, **params).stages)
        return Passes(per.forward * self.eot, per.backward * self.eot)

    def attack(self, name: str, *, tag: str, points=None, eps: float | None = None, model=None,
               **params) -> dict[int, dict]:
        """Run attack ``name`` on ``points`` (default: the sample), at budget ``eps`` (default: the run's), on
        ``model`` (default: the model as attacks see it; the examples are judged on the model itself);
        per point ``{"broken", "score", "norm"}`` (score: the share of draws still correct)."""
        return self._run(name, tag, points, eps, self.model if model is None else model, params)

    def trace(self, name: str, *, tag: str, points=None, **params) -> tuple[dict[int, dict], dict[int, list[float]]]:
        """:meth:`attack`, also returning every point's margins over the attack's forward passes, in order."""
        pts = self.points if points is None else points
        rec = Recorder(self.model, self.x.to(self.device), self.y.to(self.device), self.threat)
        where = {p: k for k, p in enumerate(self.points)}
        res = self._run(name, tag, pts, None, rec, params,  # the margins are logged with each batch, so it resumes
                        extra=lambda chunk, _: {"margins": [rec.margins[where[p]] for p in chunk]})
        return res, {p: res[p].pop("margins") for p in pts}

    def transfer(self, name: str, *, tag: str, points=None, **params) -> dict[int, dict]:
        """:meth:`attack` on :attr:`surrogate` (the examples judged on the model), each point also with
        ``"surrogate_correct"`` (the surrogate classifies the clean input correctly) and ``"fooled_surrogate"``
        (it misclassifies the example). Two surrogate passes per point, counted also when resumed."""
        surrogate = self.surrogate
        if surrogate is None:
            raise UserError("a transfer attack needs a surrogate model (--surrogate MODEL)")
        pts = self.points if points is None else list(points)
        x, y = self._s.runner.x, self._s.runner.y

        def wrong(inputs, chunk) -> list[bool]:
            with torch.inference_mode():
                return (surrogate(inputs.to(self.device)).argmax(1).cpu() != y[chunk].cpu()).tolist()

        res = self._run(name, tag, pts, None, surrogate, params,  # logged with each batch: resumed like the rest
                        extra=lambda chunk, x_adv: {"fooled_surrogate": wrong(x_adv, chunk)})
        for p, w in zip(pts, wrong(x[pts], pts)):
            res[p]["surrogate_correct"] = not w
        self.spent = self.spent + Passes(2 * len(pts), 0, 0, 0)
        return res

    def _run(self, name, tag, points, eps, model, params, extra=None) -> dict[int, dict]:
        pts = self.points if points is None else list(points)
        threat = self.threat if eps is None else self.threat.with_eps(eps)
        atk = create_attack(name, model, threat, **params)
        atk.name = name
        draws = 1 if model is self._surrogate else getattr(model, "samples", self.eot)  # the eot remedy's draws more
        batch = self._batch(atk, draws)
        if batch is not None and batch < min(len(pts), self._s.runner.batch_size) and name not in self._cut:
            self._cut.add(name)
            say(self._s.inputs.notes, f"audit: {name} ran in batches of {batch} points, not "
                f"{self._s.runner.batch_size}, so that an interrupted audit resumes (at most {CPU_BATCH_PASSES:,} "
                "declared forward passes per batch on a CPU); its seeds are per batch")
        with swapped_threat(self._s.runner, threat):
            res, _, spent = self._s.runner.attack(f"audit:{tag}:{threat.eps:.8g}:{name}", atk, pts,
                                                  key=f"audit:{tag}", label=f"audit: {name} ({tag}, {threat})",
                                                  batch=batch, extra=extra)
        self.spent = self.spent + spent
        return res

    def _batch(self, atk, eot: int) -> int | None:
        """At most :data:`CPU_BATCH_PASSES` declared forward passes per batch on a CPU (``eot`` passes per query of
        the model the attack sees); the run's batches elsewhere."""
        if torch.device(self.device).type != "cpu":
            return None
        per = declared(atk.stages).forward * eot
        return max(1, CPU_BATCH_PASSES // per) if per else None

    def predictions(self, x: torch.Tensor) -> torch.Tensor:
        """One prediction per image, each from its own draw when the model is random."""
        self.spent = self.spent + Passes(len(x), 0, 1, 0)
        with torch.inference_mode():
            return self._s.runner.judge.logits(x.to(self.device)).argmax(1).cpu()

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs on ``x`` (one forward pass)."""
        self.spent = self.spent + Passes(len(x), 0, 1, 0)
        with torch.inference_mode():
            return self._s.model(x.to(self.device)).cpu()

    def input_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per image, the gradient of the cross-entropy of the model attacks see, flattened (NaN kept)."""
        self.spent = self.spent + Passes(len(x) * self.eot, len(x) * self.eot, self.eot, self.eot)
        xg = x.to(self.device).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(F.cross_entropy(self.model(xg), y.to(self.device)), xg, allow_unused=True)
        return torch.zeros(len(x), xg[0].numel()) if g is None else g.reshape(len(x), -1).cpu()


def sample(correct: list[int], n: int, seed: int) -> list[int]:
    """A seeded random sample of ``n`` clean-correct points (all of them when there are fewer)."""
    rng = random.Random(derive_seed(seed, "audit", len(correct)))
    return sorted(rng.sample(sorted(correct), min(n, len(correct))))


def run_audit(s, spec, seed: int, quiet: bool, surrogate=None) -> list[dict]:
    """The checks ``spec`` names (:func:`parse_audit`) on a seeded sample of the clean-correct points of ``s``
    (``surrogate``: the run's ``--surrogate``, for the checks that attack it)."""
    names, n = spec
    if not s.correct:
        return [{"check": "audit", "passed": False, "applies": True, "detail": "no clean-correct point to audit",
                 "suggests": "check the model and data", "flagged": None, "points": 0, "doc": "audit", "remedy": ""}]
    ctx = AuditContext(s, sample(s.correct, n, seed), seed, surrogate)
    entries = [registry("check").get(nm) for nm in names] if names else list(registry("check"))
    if not entries:
        raise UserError("--audit: no plugin registers an audit check (see advkit list plugins)")
    checks = []
    for entry in entries:
        check = entry.factory(**bind_params(entry, {}))
        check.name = entry.name
        checks.append(check)
    costs = announce(s, ctx, checks, quiet)
    results = []
    for check, cost in zip(checks, costs):
        ctx.spent = Passes()
        try:
            result = dict(check.run(ctx))
        except (UserError, ThreatViolation):
            raise
        except Exception as exc:
            raise UserError(f"audit check {check.name!r} raised: {type(exc).__name__}: {exc}") from exc
        result["passes"] = {"announced": cost.as_dict(), "spent": ctx.spent.as_dict()}
        if ctx.spent.forward > cost.forward or ctx.spent.backward > cost.backward:
            say(s.inputs.notes, f"audit check {check.name!r} spent {ctx.spent.forward:,} forward + "
                                f"{ctx.spent.backward:,} backward passes, more than the {cost.forward:,.0f} + "
                                f"{cost.backward:,.0f} it announced: its declared cost is wrong")
        results.append(result)
    if surrogate is not None and not ctx.used_surrogate:
        say(s.inputs.notes, "audit: no check used --surrogate (only --adaptive bpda and transfer can)")
    return results


def announce(s, ctx: AuditContext, checks, quiet: bool) -> list[Passes]:
    """Say what the audit will cost, in passes and, when the run has a calibrated clock, in seconds; return
    each check's announced cost (the report sets it beside the attack passes the check spent)."""
    costs = [c.cost(ctx) for c in checks]
    total = sum(costs, Passes())
    if quiet or not D.is_main():
        return costs
    clock = getattr(s.plan, "clock", None)
    secs = f" (about {format_seconds(clock.seconds(total))} at most)" if clock is not None else ""
    print(f"advkit: audit: {len(checks)} checks on {len(ctx.points)} clean-correct points: up to "
          f"{total.forward:,.0f} forward + {total.backward:,.0f} backward image passes{secs}", file=sys.stderr,
          flush=True)
    return costs
