"""``fast`` (AutoAttack's attacks on advkit's schedule) and ``--confirm`` (a sample check by another attack)."""

from __future__ import annotations

import json
import math
import random

import pytest

import advkit
from advkit._internal.errors import UserError
from advkit._internal.evaluation.confirm import gap_interval, parse_confirm, sample
from advkit._internal.evaluation.engine import evaluate


@pytest.fixture(scope="module")
def robust_model():
    return advkit.load_model("smallcnn-fmnist-at")


@pytest.fixture(scope="module")
def points(fmnist_test):
    return fmnist_test.first(12)


@pytest.mark.slow
def test_fast_reaches_autoattack_on_a_robust_model_at_a_fraction_of_its_passes(robust_model, points, single_thread):
    """Side by side on the same points: fast breaks what standard AutoAttack breaks (here: all of it), for
    less than a sixth of AutoAttack's passes, counted."""
    kw = dict(eps="0.1", quiet=True, independent=True)
    aa = evaluate(robust_model, points, ["aa"], **kw)
    fast = evaluate(robust_model, points, ["fast"], **kw)
    assert fast.robust_accuracy <= aa.robust_accuracy + 0.002  # the goal's tolerance: 0.2 point
    broken_aa = {s["index"] for s in aa.samples if s["broken_by"]}
    broken_fast = {s["index"] for s in fast.samples if s["broken_by"]}
    assert broken_aa and broken_aa <= broken_fast, (broken_aa, broken_fast)
    total = lambda r: sum(r.attacks[0].passes[k] for k in ("forward", "backward"))  # noqa: E731
    assert total(fast) <= 0.15 * total(aa), (total(fast), total(aa))
    assert aa.attacks[0].extra["autoattack_standard"] and fast.attacks[0].extra["standard_autoattack"] is False


def test_fast_stops_on_broken_points_and_follows_the_threat_model(points):
    model = advkit.load_model("smallcnn-fmnist")  # undefended: the sieve breaks nearly everything
    x, y = points.tensors()
    atk = advkit.create_attack("fast", model, eps=0.1)
    out = atk.run(x, y)
    assert float((out.x_adv - x).abs().amax()) <= 0.1 + 1e-6
    assert out.passes.backward <= 3 * len(x) + 10 * len(x)  # the 3- and 10-iteration sieves were enough
    assert [s.name for s in atk.stages][:2] == ["sieve: APGD-T 1x3", "sieve: APGD-T 1x10"]
    l2 = advkit.create_attack("fast", model, eps=1.0, norm="L2")
    assert any("FAB-T" in s.name for s in l2.stages)
    with pytest.raises(UserError, match="supports Linf and L2"):
        advkit.create_attack("fast", model, eps=1.0, norm="L1")


def test_confirm_spec_and_sample():
    assert parse_confirm("aa") == ("aa", {"fraction": 0.1, "min": 20}, {})
    assert parse_confirm("aa:fraction=0.25,n_iter=5,min=3") == ("aa", {"fraction": 0.25, "min": 3}, {"n_iter": "5"})
    assert parse_confirm(None) is None and parse_confirm("none") is None
    for bad in ("aa:fraction=0", "aa:fraction=1.5", "aa:fraction=x", "aa:min=0"):
        with pytest.raises(UserError, match="--confirm"):
            parse_confirm(bad)
    pts = list(range(100, 400))
    chosen = sample(pts, 0.1, 20, seed=3)
    assert len(chosen) == 30 and set(chosen) <= set(pts) and chosen == sample(pts, 0.1, 20, seed=3)
    assert chosen != sample(pts, 0.1, 20, seed=4)
    assert len(sample(pts[:50], 0.1, 20, seed=0)) == 20 and sample(pts[:5], 0.1, 20, seed=0) == pts[:5]


def test_confirm_interval_covers_the_gap_95_percent_of_the_time():
    """Sampling without replacement from a known population: the interval holds the true gap about 95 % of
    the time, and closes on it when every survivor is sampled."""
    rng = random.Random(0)
    n, survivors, missed, m = 500, 200, 14, 20  # 14 of the 200 survivors are breakable: true gap 14/500
    population = [1] * missed + [0] * (survivors - missed)
    truth = missed / n
    hits = 0
    for _ in range(4000):
        k = sum(rng.sample(population, m))
        est = gap_interval(k, m, survivors, n)
        lo, hi = est["ci95"]
        assert lo <= est["gap"] <= hi and est["gap"] == pytest.approx(survivors / n * k / m)
        hits += lo - 1e-12 <= truth <= hi + 1e-12
    assert 0.93 <= hits / 4000 <= 0.995
    full = gap_interval(7, survivors, survivors, n)
    assert full["ci95"] == [pytest.approx(7 / n)] * 2
    assert gap_interval(0, 0, 0, n) == {"gap": 0.0, "ci95": [0.0, 0.0]}


def test_confirm_runs_on_a_sample_of_the_survivors_and_reports(trained_cnn, fmnist_test, tmp_path):
    data = fmnist_test.first(60)
    r = evaluate(trained_cnn, data, ["fgsm"], eps="0.02", quiet=True, out=tmp_path,
                 confirm="pgd:fraction=0.5,min=4,steps=20")
    c = r.confirm
    survivors = round(r.robust_accuracy * 60)
    assert c["survivors"] == survivors and c["sampled"] == max(4, math.ceil(0.5 * survivors))
    assert 0 <= c["broken"] <= c["sampled"] and c["gap"] == pytest.approx(survivors / 60 * c["broken"] / c["sampled"])
    # the points it broke are survivors of fgsm that pgd breaks on its own
    samples = {s["index"]: s for s in r.samples}
    assert all(samples[i]["clean_correct"] and not samples[i]["broken_by"] for i in c["broken_points"])
    md = (tmp_path / "report.md").read_text()
    assert "## Confirmation" in md and "Standard AutoAttack: not run" in md
    assert json.loads((tmp_path / "report.json").read_text())["confirm"]["sampled"] == c["sampled"]
    with pytest.raises(UserError, match="unknown attack 'nope'"):
        evaluate(trained_cnn, data, ["fgsm"], eps="0.02", quiet=True, confirm="nope")
