"""The evaluation engine behind ``advkit eval`` and ``advkit.evaluate``.

- The model is evaluated in eval mode (a model found in training mode is switched, with a warning).
- Clean accuracy, then each attack in order. By default an attack runs only on the
  points every earlier attack failed on (AutoAttack's cascade); ``independent=True``
  runs each attack on every clean-correct point as well. The worst case per sample
  is over all attacks.
- Every adversarial batch is verified against the threat model; a violation stops
  the run (:class:`advkit.errors.ThreatViolation`) naming the attack.
- A stochastic model (two forward passes disagree) is evaluated adaptively:
  ``aa`` becomes ``aa-rand`` and the other attacks see the expectation of the logits
  over ``eot`` samples (EOT).
- Batches are seeded from (seed, attack, batch), and results are appended to
  ``OUT/progress.jsonl`` as the run goes, so an interrupted run resumes to the same
  result; under torchrun the batches are shared among ranks and the result equals a
  single process.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advkit import distributed as D
from advkit.attack import create_attack
from advkit.errors import UserError
from advkit.plugins import registry
from advkit.runtime import derive_seed, model_fingerprint, progress, seed_everything, versions
from advkit.threat import ThreatModel, parse_eps, parse_norm


class EOTModel(nn.Module):
    """Expectation over transformation: the mean of ``samples`` forward passes of a random model."""

    def __init__(self, model: nn.Module, samples: int = 20):
        super().__init__()
        self.model = model
        self.samples = samples

    def forward(self, x):
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)


@dataclass
class AttackResult:
    """Outcome of one attack in a run."""

    name: str
    implementation: str = ""
    attempted: int = 0
    broken: int = 0
    seconds: float = 0.0
    accuracy: float | None = None  # cascade: accuracy after this and all earlier attacks
    independent_accuracy: float | None = None
    dropped: int = 0  # minimum-norm attacks: points whose perturbation did not fit the budget (not broken)
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class Report:
    """Everything an evaluation found; written by :mod:`advkit.report`."""

    n: int
    clean_accuracy: float
    robust_accuracy: float
    attacks: list[AttackResult]
    threat: ThreatModel
    samples: list[dict]
    meta: dict = field(default_factory=dict)
    sweep: list[dict] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            **self.meta,
            "threat_model": self.threat.as_dict(),
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": [a.__dict__ for a in self.attacks],
            "eps_sweep": self.sweep,
            "audit": self.audit,
        }


def is_stochastic(model: nn.Module, x: torch.Tensor) -> bool:
    """Do two forward passes on the same batch disagree?"""
    with torch.inference_mode():
        a, b = model(x), model(x)
    return not torch.allclose(a, b, rtol=1e-5, atol=1e-6)


class _Progress:
    """Per-sample results appended to ``progress.jsonl`` and read back on resume."""

    def __init__(self, out: Path | None, config: dict):
        self.out = out
        self.done: dict[tuple[str, int], dict] = {}
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        cfg_path = out / "run.json"
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if old != json.loads(json.dumps(config, default=str)):
                diff = [k for k in config if old.get(k) != json.loads(json.dumps(config[k], default=str))]
                raise UserError(
                    f"{out} holds a run with other settings ({', '.join(diff)}); use another --out or delete it"
                )
        elif D.is_main():
            from advkit.checkpoint import atomic_write_json

            atomic_write_json(cfg_path, config)
        path = out / "progress.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                self.done[(rec["stage"], rec["batch"])] = rec

    def get(self, stage: str, batch: int):
        return self.done.get((stage, batch))

    def put(self, recs: list[dict]) -> None:
        for rec in recs:
            self.done[(rec["stage"], rec["batch"])] = rec
        if self.out is None or not D.is_main() or not recs:
            return
        with open(self.out / "progress.jsonl", "a") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Engine:
    """Runs attacks over indexed points in seeded, resumable, shardable batches."""

    def __init__(self, model, x, y, threat, *, batch_size, seed, progress: _Progress, quiet, device):
        self.model, self.x, self.y, self.threat = model, x, y, threat
        self.batch_size, self.seed, self.progress, self.quiet, self.device = batch_size, seed, progress, quiet, device

    def _batches(self, idx: list[int]):
        return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    def predict(self, stage: str, idx: list[int]) -> dict[int, int]:
        """Predictions on clean points (seeded per batch, so random models are reproducible)."""
        out = {}

        def run(b, chunk):
            seed_everything(derive_seed(self.seed, stage, b))
            xb = self.x[chunk].to(self.device)
            with torch.inference_mode():
                pred = self.model(xb).argmax(1).cpu()
            return {"stage": stage, "batch": b, "index": chunk, "pred": pred.tolist()}

        for rec in self._run(stage, idx, run, None):
            out.update(zip(rec["index"], rec["pred"]))
        return out

    def attack(self, stage: str, attack, idx: list[int], eps=None) -> tuple[dict[int, dict], float]:
        """Run ``attack`` on ``idx``; per point: broken (bool) and perturbation norm. Verifies every batch."""
        out: dict[int, dict] = {}
        seconds = 0.0

        def run(b, chunk):
            seed_everything(derive_seed(self.seed, stage, b))
            xb, yb = self.x[chunk].to(self.device), self.y[chunk].to(self.device)
            result = attack.run(xb, yb, eps=eps)  # verified against the threat model, or stops the run
            with torch.inference_mode():
                pred = self.model(result.x_adv).argmax(1)
            norms = self.threat.norms(xb, result.x_adv).cpu()
            return {
                "stage": stage, "batch": b, "index": chunk, "broken": (pred != yb).cpu().tolist(),
                "norm": [float(v) for v in norms], "dropped": result.dropped.cpu().tolist(),
            }

        bar = progress(len(idx), stage, quiet=self.quiet, unit="img")
        for rec in self._run(stage, idx, run, bar):
            seconds += rec.get("seconds", 0.0)
            for i, br, nm, dr in zip(rec["index"], rec["broken"], rec["norm"], rec.get("dropped") or [False] * len(rec["index"])):
                out[i] = {"broken": bool(br), "norm": nm, "dropped": bool(dr)}
        bar.close()
        return out, seconds

    def _run(self, stage, idx, fn, bar):
        """Do the batches not yet in the progress log, shared round-robin among ranks."""
        rank, size = D.world()
        recs, pending = [], []
        for b, chunk in enumerate(self._batches(idx)):
            rec = self.progress.get(stage, b)
            if rec is not None and rec["index"] == chunk:
                recs.append(rec)
                if bar is not None:
                    bar.update(len(chunk))
            else:
                pending.append((b, chunk))
        # Rounds of one batch per rank; all ranks gather each round, so every rank sees every result.
        for start in range(0, len(pending), size):
            group = pending[start : start + size]
            t0 = time.perf_counter()
            local = [fn(b, c) for (b, c) in group[rank : rank + 1]]
            gathered = [rec for part in D.all_gather(local) for rec in part]
            share = (time.perf_counter() - t0) / max(len(gathered), 1)
            for rec in gathered:  # wall-clock share of the round, so a resumed run reports the original time
                rec["seconds"] = share
            self.progress.put(gathered)
            recs.extend(gathered)
            if bar is not None:
                bar.update(sum(len(rec["index"]) for rec in gathered))
        return recs


def adaptive_name(name: str, stochastic: bool) -> str:
    """The attack to run for ``name``: its declared adaptive counterpart on a stochastic model."""
    counterpart = registry("attack").get(name).can("adaptive") if stochastic else None
    return counterpart or name


def option_names(attacks, audit: bool) -> set[str]:
    """Attack names ``attack_opts`` may address: the attacks, their adaptive counterparts, the audit's references."""
    reg = registry("attack")
    names = set()
    for a in attacks:
        entry = reg.get(a)
        names |= {a.lower(), entry.name, *entry.aliases}
        if entry.can("adaptive"):
            names.add(str(entry.can("adaptive")).lower())
    if audit:
        for role in ("white-box", "black-box"):
            names |= {e.name for e in reg.with_capability("reference", role)}
    return names


def evaluate(
    model: nn.Module,
    data,
    attacks=("pgd", "cw", "aa"),
    *,
    eps=None,
    norm: str = "Linf",
    attack_opts: dict[str, dict] | None = None,
    n: int | None = None,
    batch_size: int = 250,
    independent: bool = False,
    out: str | os.PathLike | None = None,
    eps_sweep=None,
    audit: bool = False,
    eot: int = 20,
    seed: int = 0,
    device: str = "cpu",
    quiet: bool = False,
    meta: dict | None = None,
) -> Report:
    """Evaluate ``model`` on ``data`` (an :class:`advkit.data.ImageData` or an ``(x, y)`` pair).

    ``eps`` defaults to the dataset's usual budget; ``attack_opts`` maps an
    attack name to its parameters (``{"pgd": {"steps": 20}}``). Returns a
    :class:`Report`; with ``out`` the reports are written there too.
    """
    from advkit.data import check_images

    x, y, data_meta = _tensors(data, n)
    check_images(x, where="evaluation data")
    norm = parse_norm(norm)
    eps = eps if eps is not None else data_meta.get("default_eps", "8/255")
    threat = ThreatModel(norm, parse_eps(eps, norm))
    attacks = [a for a in attacks if a]
    if not attacks:
        raise UserError("no attack given (e.g. --attacks pgd,cw,aa)")
    attack_opts = {k.lower(): v for k, v in (attack_opts or {}).items()}
    allowed = option_names(attacks, audit)
    unused = [k for k in attack_opts if k not in allowed]
    if unused:
        raise UserError(f"--attack-opt names {unused[0]!r}, which is not among --attacks {','.join(attacks)}")

    if model.training:
        warnings.warn("the model was in training mode; switched to eval mode for evaluation")
    model = model.to(device).eval()
    rank, size = D.world()

    stochastic = bool(getattr(model, "stochastic", False)) or is_stochastic(model, x[: min(len(x), 64)].to(device))
    eval_model = EOTModel(model, eot).eval() if stochastic and eot > 1 else model
    adaptive = []
    if stochastic:
        adaptive.append(f"stochastic model: predictions vary between forward passes; gradient attacks use EOT over {eot} samples (mean logits)")
        for a in attacks:
            if adaptive_name(a, True) != a:
                adaptive.append(f"{a} replaced by its adaptive counterpart {adaptive_name(a, True)}")

    config = {
        "model": (meta or {}).get("model", type(model).__name__),
        "fingerprint": model_fingerprint(model),
        "data": data_meta.get("name", ""),
        "n": len(x),
        "attacks": attacks,
        "attack_opts": attack_opts,
        "threat": threat.as_dict(),
        "seed": seed,
        "independent": independent,
        "eot": eot if stochastic else None,
    }
    progress = _Progress(Path(out) if out else None, config)
    engine = Engine(model, x, y, threat, batch_size=batch_size, seed=seed, progress=progress, quiet=quiet, device=device)

    all_idx = list(range(len(x)))
    preds = engine.predict("clean", all_idx)
    correct = [i for i in all_idx if preds[i] == int(y[i])]
    samples = [
        {"index": i, "label": int(y[i]), "clean_pred": preds[i], "clean_correct": preds[i] == int(y[i]), "broken_by": "", "norm": None}
        for i in all_idx
    ]
    robust = list(correct)
    results: list[AttackResult] = []
    for k, name in enumerate(attacks):
        run_name = adaptive_name(name, stochastic)
        params = dict(attack_opts.get(run_name.lower(), attack_opts.get(name.lower(), {})))
        target = model if run_name != name else eval_model  # an adaptive counterpart does its own EOT
        atk = create_attack(run_name, target, threat, **params)
        atk.name = run_name
        desc = atk.describe()
        res = AttackResult(name=run_name, implementation=atk.implementation, params=desc.pop("params"), extra=desc)
        if independent:
            ind, secs = engine.attack(f"ind:{k}:{run_name}", atk, correct)
            still = sum(1 for i in correct if not ind[i]["broken"])
            res.independent_accuracy = still / len(x)
            res.seconds += secs
            newly = {i: r for i, r in ind.items() if r["broken"] and i in set(robust)}
        else:
            casc, secs = engine.attack(f"cascade:{k}:{run_name}", atk, robust)
            res.seconds += secs
            newly = {i: r for i, r in casc.items() if r["broken"]}
        res.attempted = len(robust)
        res.broken = len(newly)
        ran = ind if independent else casc
        res.dropped = sum(1 for r in ran.values() if r.get("dropped"))
        for i, r in newly.items():
            samples[i]["broken_by"] = run_name
            samples[i]["norm"] = r["norm"]
        robust = [i for i in robust if i not in newly]
        res.accuracy = len(robust) / len(x)
        results.append(res)

    report = Report(
        n=len(x),
        clean_accuracy=len(correct) / len(x),
        robust_accuracy=len(robust) / len(x),
        attacks=results,
        threat=threat,
        samples=samples,
        meta={
            **(meta or {}),
            "seed": seed,
            "dataset": data_meta,
            "model_fingerprint": config["fingerprint"],
            "mode": "independent" if independent else "cascade",
            "stochastic": stochastic,
            "adaptive": adaptive,
            "device": str(device),
            "world_size": size,
            "versions": versions(),
        },
    )
    if eps_sweep:
        report.sweep = sweep(engine, model, eval_model, attacks, attack_opts, threat, eps_sweep, correct, stochastic, len(x))
    if audit:
        from advkit.evaluation.checks import run_audit

        report.audit = run_audit(engine, model, eval_model, threat, correct, robust, results, attack_opts, stochastic, len(x))
    if out and D.is_main():
        from advkit.evaluation.report import write_reports

        write_reports(report, Path(out))
    return report


def sweep(engine, model, eval_model, attacks, attack_opts, threat, eps_list, correct, stochastic, n) -> list[dict]:
    """Independent accuracy of every attack, and the worst case, at each budget."""
    rows = []
    for e in eps_list:
        t = threat.with_eps(parse_eps(e, threat.norm))
        broken_any: set[int] = set()
        row = {"eps": t.eps, "eps_label": str(e), "attacks": {}}
        for k, name in enumerate(attacks):
            run_name = adaptive_name(name, stochastic)
            atk = create_attack(run_name, model if run_name != name else eval_model, t, **attack_opts.get(name.lower(), {}))
            atk.name = run_name
            saved = engine.threat
            engine.threat = t
            try:
                res, _ = engine.attack(f"sweep:{t.eps:.8g}:{k}:{run_name}", atk, correct)
            finally:
                engine.threat = saved
            broken = {i for i, r in res.items() if r["broken"]}
            broken_any |= broken
            row["attacks"][run_name] = (len(correct) - len(broken)) / n
        row["worst_case"] = (len(correct) - len(broken_any)) / n
        rows.append(row)
    return rows


def _tensors(data, n):
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        x, y = data
        x, y = (x[:n], y[:n]) if n else (x, y)
        return x, torch.as_tensor(y).long(), {"name": "tensors", "default_eps": "8/255"}
    sub = data.first(n) if hasattr(data, "first") else data
    x, y = sub.tensors()
    info = getattr(data, "info", None)
    meta = {"name": getattr(info, "name", ""), "split": getattr(info, "split", ""), "default_eps": getattr(info, "default_eps", "8/255"), "source": getattr(info, "source", ""), "classes": getattr(info, "classes", [])}
    return x, y.long(), meta
