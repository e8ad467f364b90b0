"""The evaluation engine: accuracy ordering, threat verification, resumption, stochastic models, audit."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
from fractions import Fraction
from math import comb

import pytest
import torch
from torch import nn

import advkit
import advkit.plugin
from advkit._internal import plugins
from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.evaluation.engine import evaluate
from advkit._internal.stochastic import stochasticity


def _test_plugin():
    """A plugin module registered for these tests: a broken attack and an interruptible PGD."""
    mod = types.ModuleType("advkit_test_attacks")
    state = {"calls": 0, "fail_at": None}

    def broken(model, threat):
        """Returns x + 2 eps: outside the threat model."""
        return lambda x, y: (x + 2 * threat.eps).clamp(0, 1)

    def flaky(model, threat, steps: int = 5):
        """PGD that raises KeyboardInterrupt on a chosen call (to test resumption)."""
        inner = advkit.create_attack("pgd", model, threat, steps=steps)

        def attack(x, y):
            state["calls"] += 1
            if state["fail_at"] is not None and state["calls"] == state["fail_at"]:
                raise KeyboardInterrupt
            return inner(x, y)

        return attack

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        register("broken", broken)
        register("flaky", flaky)

    mod.advkit_register_attacks = advkit_register_attacks
    mod.state = state
    return mod


@pytest.fixture(scope="module")
def test_plugin():
    mod = _test_plugin()
    plugins.register_plugin(mod)
    yield mod
    plugins.pm.unregister(mod)  # later tests in this process see the installed plugins only
    plugins._registries.clear()


@pytest.fixture(scope="module")
def data(fmnist_test):
    return fmnist_test.first(120)


def test_worst_case_below_each_attack_below_clean(trained_cnn, data):
    r = evaluate(trained_cnn, data, ["fgsm", "pgd"], eps="0.1", independent=True, batch_size=60, quiet=True)
    assert r.clean_accuracy > 0.6
    for a in r.attacks:
        assert r.robust_accuracy <= a.independent_accuracy <= r.clean_accuracy
    fgsm, pgd = r.attacks
    assert pgd.independent_accuracy <= fgsm.independent_accuracy + 0.02
    assert pgd.independent_accuracy < r.clean_accuracy - 0.3  # a standard model falls under PGD at eps 0.1
    cascade = evaluate(trained_cnn, data, ["fgsm", "pgd"], eps="0.1", batch_size=60, quiet=True)
    assert cascade.robust_accuracy <= cascade.attacks[0].accuracy <= cascade.clean_accuracy == r.clean_accuracy
    assert cascade.attacks[1].attempted < cascade.attacks[0].attempted  # pgd only saw points fgsm missed
    broken = [s for s in r.samples if s["broken_by"]]
    assert broken and all(0 < s["norm"] <= 0.1 + 1e-5 for s in broken)


def test_cascade_equals_independent_when_each_point_draws_its_own_noise(trained_cnn, data):
    """A batch's randomness is a function of (seed, attack, its points): with one point per batch, PGD's
    random start for a point is the same in both modes, so the cascade's worst case is the independent one."""
    kw = dict(eps="0.1", batch_size=1, quiet=True, seed=5)
    ind = evaluate(trained_cnn, data.first(24), ["fgsm", "pgd"], independent=True, **kw)
    casc = evaluate(trained_cnn, data.first(24), ["fgsm", "pgd"], **kw)
    robust = lambda r: [s["index"] for s in r.samples if s["clean_correct"] and not s["broken_by"]]  # noqa: E731
    assert robust(casc) == robust(ind) and casc.robust_accuracy == ind.robust_accuracy


def test_broken_attack_is_caught(trained_cnn, data, test_plugin):
    with pytest.raises(ThreatViolation, match=r"attack 'broken'.*exceed Linf eps=0.1.*worst by 0.1"):
        evaluate(trained_cnn, data, ["broken"], eps="0.1", quiet=True)


def _csv(path):
    return list(csv.reader(open(path)))


def test_resume_equals_uninterrupted(trained_cnn, data, test_plugin, tmp_path):
    kw = dict(eps="0.1", batch_size=6, seed=3, quiet=True)
    test_plugin.state.update(calls=0, fail_at=None)
    evaluate(trained_cnn, data, ["fgsm", "flaky"], out=tmp_path / "full", **kw)
    test_plugin.state.update(calls=0, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(trained_cnn, data, ["fgsm", "flaky"], out=tmp_path / "cut", **kw)
    assert not (tmp_path / "cut" / "report.json").exists()
    done = (tmp_path / "cut" / "progress.jsonl").read_text().count("cascade:1:flaky")
    assert done == 2
    test_plugin.state.update(calls=0, fail_at=None)
    evaluate(trained_cnn, data, ["fgsm", "flaky"], out=tmp_path / "cut", **kw)
    calls_on_resume = test_plugin.state["calls"]
    full = _csv(tmp_path / "full" / "results.csv")
    assert _csv(tmp_path / "cut" / "results.csv") == full
    total_batches = (tmp_path / "full" / "progress.jsonl").read_text().count("cascade:1:flaky")
    assert calls_on_resume == total_batches - 2  # finished batches were not redone
    before = json.loads((tmp_path / "full" / "report.json").read_text())["attacks"]
    evaluate(trained_cnn, data, ["fgsm", "flaky"], out=tmp_path / "full", **kw)  # all resumed
    after = json.loads((tmp_path / "full" / "report.json").read_text())["attacks"]
    assert [a["seconds"] for a in after] == pytest.approx([a["seconds"] for a in before])  # the original times
    assert all(a["seconds"] > 0 for a in after)
    with pytest.raises(UserError, match="other settings"):
        evaluate(trained_cnn, data, ["pgd"], out=tmp_path / "cut", **kw)


def test_reports_are_complete(trained_cnn, data, tmp_path):
    evaluate(trained_cnn, data, ["pgd"], eps="0.1", out=tmp_path, eps_sweep=["0.02", "0.05", "0.1"], quiet=True, meta={"command": "test"})
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["threat_model"] == {"norm": "Linf", "eps": 0.1, "bounds": [0.0, 1.0]}
    assert rep["versions"]["torch"] and rep["versions"]["torchattacks"] and rep["seed"] == 0
    assert rep["attacks"][0]["implementation"].startswith("torchattacks")
    accs = [row["worst_case"] for row in rep["eps_sweep"]]
    assert accs == sorted(accs, reverse=True)
    assert (tmp_path / "robustness_curve.png").stat().st_size > 5000
    assert "| **worst case** |" in (tmp_path / "report.md").read_text()
    rows = _csv(tmp_path / "results.csv")
    assert rows[0][:4] == ["index", "label", "clean_pred", "clean_correct"] and len(rows) == 121


class Noisy(nn.Module):
    """A model whose output is random at test time too (like noise injection)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.stochastic = False

    def forward(self, x):
        return self.model(x) + 0.5 * torch.randn(x.shape[0], 10, device=x.device)


def test_stochastic_model_is_detected_and_evaluated_adaptively(trained_cnn, data):
    noisy = Noisy(trained_cnn).eval()
    x16 = data.tensors()[0][:16]
    assert stochasticity(noisy, x16, 'noisy', False)[0] and not stochasticity(trained_cnn, x16, 'cnn', False)[0]
    r = evaluate(noisy, data.first(40), ["pgd"], eps="0.1", eot=4, quiet=True)
    assert r.meta["stochastic"] is True
    assert any("EOT over 4" in note for note in r.meta["adaptive"])


def test_training_mode_is_switched_with_a_warning(trained_cnn, data):
    trained_cnn.train()
    with pytest.warns(UserWarning, match="training mode"):
        evaluate(trained_cnn, data.first(20), ["fgsm"], eps="0.1", quiet=True)
    assert not trained_cnn.training


class Rounding(nn.Module):
    """Masks gradients: quantises the input to ``steps + 1`` levels, so input gradients are zero almost everywhere."""

    def __init__(self, model, steps: int = 4):
        super().__init__()
        self.model, self.steps = model, steps

    def forward(self, x):
        return self.model(torch.round(x * self.steps) / self.steps)


@pytest.fixture(scope="module")
def robust_cnn(fmnist_test):
    from advkit._internal.models import load_model

    info = fmnist_test.info
    return load_model("smallcnn-fmnist-at", num_classes=10, input_shape=info.input_shape).eval()


def binomial_tail(k: int, m: int, rate: Fraction) -> Fraction:
    """P(Binomial(m, rate) >= k), exactly."""
    return sum((comb(m, j) * rate**j * (1 - rate) ** (m - j) for j in range(k, m + 1)), Fraction(0))


def beyond_noise(c: dict) -> bool:
    """black-box-gap's documented rule: Square's breaks among the survivors exceed what a 5 % rate explains
    at 95 % confidence (one-sided exact binomial test)."""
    return binomial_tail(c["flagged"], c["points"], Fraction(1, 20)) < Fraction(1, 20)


def test_audit_passes_an_unmasked_robust_model_and_flags_a_masked_one(robust_cnn, data):
    from advkit._internal.models import load_model

    opts = {"square": {"n_queries": 300}, "pgd": {"steps": 5}}
    kw = dict(eps="0.1", audit="eps-monotone,more-steps,black-box-gap,gradients:n=40", attack_opts=opts, quiet=True,
              batch_size=40)
    honest = evaluate(robust_cnn, data.first(40), ["pgd"], **kw)
    assert 0.3 < honest.robust_accuracy < honest.clean_accuracy  # robust, not trivially so
    assert {c["check"]: c["passed"] for c in honest.audit} == {
        "eps-monotone": True, "more-steps": True, "black-box-gap": True, "unavailable-gradients": True}, honest.audit
    standard = load_model("smallcnn-fmnist", num_classes=10, input_shape=(1, 28, 28)).eval()
    with pytest.warns(UserWarning, match="input gradients are all zero"):  # 16 levels: a step below eps
        masked = evaluate(Rounding(standard, 15).eval(), data.first(40), ["pgd"], **kw)
    flags = {c["check"]: c["passed"] for c in masked.audit}
    assert flags["unavailable-gradients"] is False and flags["black-box-gap"] is False, masked.audit
    for c in (next(c for c in r.audit if c["check"] == "black-box-gap") for r in (honest, masked)):
        assert "the strongest pgd run" in c["detail"] and c["points"] > 20
        assert beyond_noise(c) is (not c["passed"]), c
    black = next(c for c in masked.audit if c["check"] == "black-box-gap")
    assert black["flagged"] > black["points"] / 2  # masking, far beyond the noise bound


def test_black_box_gap_noise_limit_is_a_one_sided_binomial_test():
    from advkit_audit.carlini import noise_limit

    for m in (1, 2, 5, 27, 54, 100, 250):
        for rate, confidence in ((Fraction(1, 20), Fraction(19, 20)), (Fraction(1, 10), Fraction(99, 100))):
            k = noise_limit(m, float(rate), float(confidence))
            assert binomial_tail(k, m, rate) >= 1 - confidence, (m, k)  # k breaks: explained by the rate
            assert k == m or binomial_tail(k + 1, m, rate) < 1 - confidence, (m, k)  # one more: beyond it
    assert noise_limit(0) == 0


def test_images_outside_range_are_refused(trained_cnn):
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        evaluate(trained_cnn, (torch.rand(4, 1, 28, 28) * 255, torch.zeros(4, dtype=torch.long)), ["pgd"], quiet=True)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(trained_cnn, tmp_path):
    from advkit._internal.checkpoint import save_checkpoint

    ckpt = save_checkpoint(trained_cnn, tmp_path / "m")
    args = ["-m", "advkit", "--quiet", "eval", "--model", str(ckpt), "--attacks", "fgsm,pgd", "-n", "90", "--batch-size", "20"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert _csv(tmp_path / "two" / "results.csv") == _csv(tmp_path / "one" / "results.csv")
    rep = json.loads((tmp_path / "two" / "report.json").read_text())
    assert rep["world_size"] == 2
