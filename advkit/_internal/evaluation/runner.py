"""Seeded, resumable, shardable batches: how the evaluation runs a model or an attack over points.

- Each batch's randomness is seeded from ``(seed, what runs, the points in the
  batch)``: it does not depend on the run's mode or on the batch's position, so
  with ``batch_size=1`` every point's attack noise is its own and the cascade's
  worst case equals the independent run's.
- Results are appended to ``OUT/progress.jsonl`` batch by batch; a re-run with
  the same settings (``OUT/run.json``, which includes the versions of advkit,
  torch and the attack libraries) resumes and says how many batches it reused.
- Non-finite logits, and a model or attack that raises, stop the run with one
  line naming the points or the batch; finished batches stay in the log.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from advkit._internal import distributed as D
from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.meter import Meter
from advkit._internal.passes import Passes
from advkit._internal.progress import progress
from advkit._internal.seeds import derive_seed, seed_everything
from advkit._internal.stochastic import Judge

if TYPE_CHECKING:
    from advkit._internal.threat import ThreatModel


class ModelFailure(Exception):
    """The model raised during a forward pass (wrapped so the engine can tell it from an attack failure)."""


class Checked(nn.Module):
    """The user's model, with its exceptions marked as the model's (nothing else changes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        try:
            return self.model(x)
        except (ModelFailure, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ModelFailure(f"{type(exc).__name__}: {exc}") from exc


def finite_logits(logits: torch.Tensor, index: list[int], what: str) -> None:
    """Stop the run when ``logits`` hold NaN or inf, naming the points (dataset indices)."""
    bad = (~torch.isfinite(logits.reshape(len(index), -1)).all(1)).nonzero().flatten().tolist()
    if bad:
        pts = [index[i] for i in bad]
        shown = ", ".join(map(str, pts[:8])) + (f" and {len(pts) - 8} more" if len(pts) > 8 else "")
        raise UserError(f"the model returned NaN or inf logits on {what} at {len(pts)} point(s): {shown}")


class Progress:
    """Per-batch results appended to ``progress.jsonl`` and read back on resume."""

    def __init__(self, out: Path | None, config: dict):
        self.out = out
        self.done: dict[tuple[str, int], dict] = {}
        self.batches = self.resumed = 0
        if out is None:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
        cfg_path = out / "run.json"
        config = json.loads(json.dumps(config, default=str))
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if old != config:
                diff = [k for k in sorted(set(config) | set(old)) if old.get(k) != config.get(k)]
                raise UserError(
                    f"{out} holds a run with other settings ({', '.join(diff)}); use another --out or delete it"
                )
        elif D.is_main():
            from advkit._internal.files import atomic_write_json

            atomic_write_json(cfg_path, config)
        path = out / "progress.jsonl"
        if path.exists():
            text = path.read_text()
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                self.done[(rec["stage"], rec["batch"])] = rec
            if text and not text.endswith("\n") and D.is_main():
                with open(path, "a") as f:  # the cut line stays alone; new records start on their own line
                    f.write("\n")

    def get(self, stage: str, batch: int):
        return self.done.get((stage, batch))

    def put(self, recs: list[dict]) -> None:
        for rec in recs:
            self.done[(rec["stage"], rec["batch"])] = rec
        if self.out is None or not D.is_main() or not recs:
            return
        try:
            with open(self.out / "progress.jsonl", "a") as f:
                for rec in recs:
                    f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk: the records written so far stay, and a rerun resumes from them
            raise UserError(f"cannot write {self.out / 'progress.jsonl'}: {exc.strerror or exc}; the finished "
                            f"batches are kept: free space and re-run to resume") from None


class Runner:
    """Runs the model or an attack over indexed points in seeded, resumable, shardable batches."""

    def __init__(self, model, x, y, threat, *, batch_size, seed, progress: Progress, quiet, device, keeper=None,
                 judge: Judge | None = None):
        self.model, self.x, self.y, self.threat = model, x, y, threat
        self.batch_size, self.seed, self.progress, self.quiet, self.device = batch_size, seed, progress, quiet, device
        self.keeper = keeper  # collects adversarial examples for --save-adv (None: keep nothing)
        self.judge = judge or Judge(model)  # how a point is judged correct: over draws when the model is random

    def _batches(self, idx: list[int], size: int | None = None):
        size = min(size or self.batch_size, self.batch_size)
        return [idx[i : i + size] for i in range(0, len(idx), size)]

    def predict(self, stage: str, idx: list[int]) -> dict[int, tuple[int, float]]:
        """``(prediction, score)`` on clean points, seeded per batch (random models are reproducible); the
        score is the share of the judge's draws that are correct (0 or 1 for a deterministic model)."""

        draws = self.judge.draws  # a random model: a bar that moves with every draw, inside a batch
        bar = progress(len(idx), f"clean ({draws} draws per point)", quiet=self.quiet, unit="img") if draws > 1 \
            else None

        def run(b, chunk):
            seed_everything(derive_seed(self.seed, stage, *chunk))
            tick = None if bar is None else (lambda share: bar.update(share * len(chunk)))
            pred, score = self.judge.scores(self.x[chunk].to(self.device), self.y[chunk].to(self.device),
                                            check=lambda out: finite_logits(out, chunk, "clean inputs"), tick=tick)
            return {"stage": stage, "batch": b, "index": chunk, "pred": pred.cpu().tolist(),
                    "score": score.cpu().tolist()}

        out = {}
        for rec in self._run(stage, idx, run, None, "the model"):
            out.update(zip(rec["index"], zip(rec["pred"], rec["score"])))
        if bar is not None:
            bar.close()
        return out

    def attack(self, stage: str, attack, idx: list[int], key: str | None = None, label: str | None = None,
               plan=None, k: int = 0, batch: int | None = None, extra=None) -> tuple[dict[int, dict], float, Passes]:
        """Run ``attack`` on ``idx``; per point: broken, perturbation norm, dropped. Verifies every batch.

        ``key`` names the attack for seeding (default ``stage``): the same key and
        the same points give the same randomness in any mode. ``label`` is what
        the progress bar says (default ``stage``). ``plan``: the run's cost plan,
        in which this is attack ``k``; ``batch``: at most
        this many points per batch (default the run's batch size); ``extra(chunk, x_adv)``: more per-point lists to
        log with each batch (``{field: [value per point]}``), returned per point beside the rest. Returns the results,
        the seconds and the passes spent (read back from the log for resumed batches).
        """

        def run(b, chunk):
            seed_everything(derive_seed(self.seed, key or stage, *chunk))
            xb, yb = self.x[chunk].to(self.device), self.y[chunk].to(self.device)
            meter.start(len(chunk))
            try:
                result = attack.run(xb, yb)  # verified against the threat model, or stops the run
            finally:
                meter.stop()
            what = f"the adversarial inputs of attack {attack.name!r}"
            pred, score = self.judge.scores(result.x_adv, yb, check=lambda out: finite_logits(out, chunk, what))
            if self.keeper is not None:
                self.keeper.add(stage, chunk, yb, xb, result.x_adv, pred)
            return {  # broken: wrong on every draw; score: the share of draws still correct
                "stage": stage, "batch": b, "index": chunk, "broken": (score == 0).cpu().tolist(),
                "score": score.cpu().tolist(),
                "norm": [float(v) for v in self.threat.norms(xb, result.x_adv).cpu()],
                "dropped": result.dropped.cpu().tolist(), "passes": result.passes.as_dict(),
                **({"extra": extra(chunk, result.x_adv)} if extra is not None else {}),
            }

        out: dict[int, dict] = {}
        seconds, passes = 0.0, Passes()
        bar = progress(len(idx), label or stage, quiet=self.quiet, unit="img")
        meter = Meter(bar, attack, plan, k)
        for rec in self._run(stage, idx, run, None, f"attack {attack.name!r}", after=meter.finished, batch=batch):
            seconds += rec.get("seconds", 0.0)
            passes = passes + Passes.of(rec.get("passes"))
            more = rec.get("extra", {})
            for j, (i, br, sc, nm, dr) in enumerate(zip(rec["index"], rec["broken"], rec["score"], rec["norm"],
                                                         rec["dropped"])):
                out[i] = {"broken": bool(br), "score": sc, "norm": nm, "dropped": bool(dr),
                          **{field: values[j] for field, values in more.items()}}
        bar.close()
        return out, seconds, passes

    def _call(self, fn, b, chunk, who: str, stage: str):
        """``fn(b, chunk)``, with a failure of the model or the attack turned into one line."""
        try:
            return fn(b, chunk)
        except (UserError, ThreatViolation):
            raise
        except Exception as exc:
            culprit = "the model" if isinstance(exc, ModelFailure) else who
            kept = f"; the finished batches are kept in {self.progress.out}: re-run to resume" if self.progress.out else ""
            detail = str(exc) if isinstance(exc, ModelFailure) else f"{type(exc).__name__}: {exc}"
            if "not have been used in the graph" in detail or "does not require grad" in detail:
                detail = ("the model's outputs do not depend on its input through autograd (a non-differentiable "
                          "step cuts the graph), so a gradient attack cannot run: use a black-box attack (square) "
                          f"or --adaptive bpda with a --surrogate [{detail.splitlines()[0]}]")
            raise UserError(f"{culprit} raised on batch {b} of {stage} (points {chunk[0]}-{chunk[-1]}): "
                            f"{detail.splitlines()[0] if detail else ''}{kept}") from exc

    def _run(self, stage, idx, fn, bar, who, after=None, batch: int | None = None):
        """Do the batches not yet in the progress log, shared round-robin among ranks.

        ``after(rec, resumed)`` hears of every batch, read back or done (once its seconds are known)."""
        rank, size = D.world()
        recs, pending = [], []
        for b, chunk in enumerate(self._batches(idx, batch)):
            rec = self.progress.get(stage, b)
            self.progress.batches += 1
            if rec is not None and rec["index"] == chunk:
                self.progress.resumed += 1
                recs.append(rec)
                if bar is not None:
                    bar.update(len(chunk))
                if after is not None:
                    after(rec, True)
            else:
                pending.append((b, chunk))
        # Rounds of one batch per rank; all ranks gather each round, so every rank sees every result.
        for start in range(0, len(pending), size):
            group = pending[start : start + size]
            t0 = time.perf_counter()
            local = [self._call(fn, b, c, who, stage) for (b, c) in group[rank : rank + 1]]
            gathered = [rec for part in D.all_gather(local) for rec in part]
            share = (time.perf_counter() - t0) / max(len(gathered), 1)
            for rec in gathered:  # wall-clock share of the round, so a resumed run reports the original time
                rec["seconds"] = share
                if after is not None:
                    after(rec, False)
            self.progress.put(gathered)
            recs.extend(gathered)
            if bar is not None:
                bar.update(sum(len(rec["index"]) for rec in gathered))
        return recs


class swapped_threat:
    """Measure perturbations under another budget for a while (the sweep, the audit)."""

    def __init__(self, runner: Runner, threat: ThreatModel):
        self.runner, self.threat = runner, threat

    def __enter__(self):
        self.saved, self.runner.threat = self.runner.threat, self.threat

    def __exit__(self, *exc):
        self.runner.threat = self.saved
