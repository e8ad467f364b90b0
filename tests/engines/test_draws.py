"""A random model is judged per point over several draws, with an interval that holds the draws' variance."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from advkit._internal.evaluation.engine import evaluate
from advkit._internal.evaluation.report import interval
from advkit._internal.stochastic import Judge, draws_per_point

C = 10


class Coin(nn.Module):
    """Classifies a point correctly with a known probability: pixel 0 holds the class (c / 10), pixel 1 the
    probability. ``per_batch``: one uniform draw decides every point of a forward pass (as weight noise does)."""

    stochastic = True

    def __init__(self, per_batch: bool):
        super().__init__()
        self.per_batch = per_batch

    def forward(self, x):
        flat = x.reshape(len(x), -1)
        c, p = (flat[:, 0] * C).round().long() % C, flat[:, 1]
        u = torch.rand(1, device=x.device).expand(len(x)) if self.per_batch else torch.rand(len(x), device=x.device)
        pred = torch.where(u < p, c, (c + 1) % C)
        return nn.functional.one_hot(pred, C).float() + 0 * flat[:, :1]


def points(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    p = torch.rand(n, generator=g)
    x = torch.rand(n, 1, 4, 4, generator=g)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = y / C, p
    return x, y, p


def run(model, n=200, seed=0, **kw):
    x, y, _ = points(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the coin has no input gradient: the run warns about it
        return evaluate(model, (x, y), "none", seed=seed, quiet=True, **kw)


def test_a_model_that_draws_once_per_batch_is_judged_one_point_at_a_time():
    x, y, _ = points(64)
    one = x[:1].expand(64, -1, -1, -1)
    per_batch, per_point = Coin(per_batch=True), Coin(per_batch=False)
    assert not draws_per_point(per_batch, x) and draws_per_point(per_point, x)
    x1 = one.clone()
    x1[:, 0, 0, 1] = 0.5
    batched = per_batch(x1).argmax(1)
    assert (batched == batched[0]).all()  # one draw for the whole batch: every copy gets the same answer
    judged = Judge(per_batch, 1, per_point=False).logits(x1).argmax(1)
    assert len(set(judged.tolist())) == 2  # each copy its own draw: both answers occur among 64 copies


def test_accuracy_is_the_mean_probability_with_an_interval_that_covers_it(tmp_path):
    x, y, p = points(200)
    truth = float(p.mean())  # the expected accuracy, computed from the probabilities themselves
    r = run(Coin(per_batch=True), draws=40, out=str(tmp_path))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["draws"] == 40 and r.draws == 40
    lo, hi = saved["clean_accuracy_ci95"]
    assert lo < truth < hi and abs(r.clean_accuracy - truth) < 0.03
    scores = [s["clean_score"] for s in r.samples]
    assert sum(scores) / len(scores) == pytest.approx(r.clean_accuracy)
    assert saved["draw_standard_error"]["clean"] < 0.01  # 40 draws: the draws' own noise is small
    assert "judged over 40 draws" in (tmp_path / "report.md").read_text()


def test_the_seed_moves_the_accuracy_less_than_the_stated_interval():
    reports = [run(Coin(per_batch=True), seed=s, draws=10) for s in range(4)]
    accs = [r.clean_accuracy for r in reports]
    lo, hi = interval(reports[0], "clean")
    assert max(accs) - min(accs) < hi - lo
    assert len(set(accs)) > 1  # the draws do depend on the seed: the test is not vacuous


def test_robust_scores_never_exceed_clean_and_eot_sufficiency_is_reported(trained_cnn, fmnist_test):
    class Noisy(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x) + 0.5 * torch.randn(x.shape[0], 10, device=x.device)

    r = evaluate(Noisy(trained_cnn).eval(), fmnist_test.first(24), ["pgd"], eps="0.1", eot=2, draws=3,
                 attack_opts={"pgd": {"steps": 2}}, quiet=True)
    assert r.draws == 3 and r.meta["stochastic"]
    assert all(s["robust_score"] <= s["clean_score"] for s in r.samples)
    assert r.robust_accuracy == pytest.approx(sum(s["robust_score"] for s in r.samples) / r.n)
    v = torch.tensor([s["robust_score"] for s in r.samples], dtype=torch.float64)
    half = 1.959964 * float(v.std()) / len(v) ** 0.5  # the normal interval of the mean score, computed here
    lo, hi = r.attacks[0].score_interval  # one attack: its interval is the worst case's
    assert lo == pytest.approx(max(0.0, float(v.mean()) - half)) and hi == pytest.approx(min(1.0, float(v.mean()) + half))
    assert hi > lo and f"{100 * lo:.1f} to {100 * hi:.1f}" in str(r).split("| pgd |")[1].splitlines()[0]
    e = r.eot_sufficiency
    assert [row["eot"] for row in e["rows"]] == [1, 5, 20, 50] and isinstance(e["still_falling"], bool)
    assert "EOT sufficiency" in str(r)


def test_a_deterministic_model_is_judged_once(trained_cnn, fmnist_test):
    r = evaluate(trained_cnn, fmnist_test.first(20), "none", quiet=True)
    assert r.draws == 1 and "clean_score" not in r.samples[0]


def test_judging_reports_every_draw_so_the_bar_moves_inside_a_batch():
    x, y, _ = points(16)
    heard = []
    Judge(Coin(per_batch=True), 4, per_point=False).scores(x, y, tick=heard.append)
    assert heard == [0.25] * 4


def test_clean_only_runs_do_not_attack_for_eot_sufficiency():
    r = run(Coin(per_batch=False), n=20, draws=3)
    assert r.eot_sufficiency == {"skipped": "the run asked for no attack (attacks none)"}
    assert "EOT sufficiency: not checked (the run asked for no attack" in str(r)
