"""Progress inside an attack call (AutoAttack's sub-attacks and restarts, Square's queries), the passes
each attack declares and spends (counted), and the cost plan built from them."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch
import torch.nn as nn

from advkit._internal import cost
from advkit._internal import progress as runtime
from advkit._internal.attack import create_attack
from advkit._internal.plugins import register_plugin, registry
from advkit._internal.threat import ThreatModel


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def setup():
    import advkit_autoattack
    import advkit_torchattacks

    reg = registry("attack")
    for name, module in (("pgd", advkit_torchattacks), ("aa", advkit_autoattack)):
        if name not in reg:
            register_plugin(module)
    torch.manual_seed(0)
    model = Tiny().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correctly classified, so every sub-attack runs
    return model, x, y


@pytest.fixture
def shown(monkeypatch):
    """What attacks pass to ``advkit._internal.progress.activity``, in order."""
    lines: list[str] = []
    import advkit_autoattack.progress
    import advkit_torchattacks.adapter

    for module in (runtime, advkit_autoattack.progress, advkit_torchattacks.adapter):
        monkeypatch.setattr(module, "activity", lambda text, force=False, stage=None: lines.append(text))
    return lines


@pytest.fixture
def pyautoattack_only(monkeypatch):
    monkeypatch.delenv("ADVKIT_AUTOATTACK", raising=False)
    monkeypatch.setitem(sys.modules, "autoattack", None)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_activity_writes_after_the_innermost_open_bar(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    outer = runtime.progress(3, "outer")
    inner = runtime.progress(10, "PGD (cascade 1/3)", unit="img")
    runtime.activity("AutoAttack: APGD-T 3/9", force=True)
    assert inner.postfix == "AutoAttack: APGD-T 3/9" and not outer.postfix
    assert "PGD (cascade 1/3)" in err.getvalue() and "AutoAttack: APGD-T 3/9" in err.getvalue()
    inner.close()
    runtime.activity("Square: query 5/50", force=True)  # the inner bar is gone: the outer one shows it
    assert outer.postfix == "Square: query 5/50"
    outer.close()
    before = err.getvalue()
    runtime.activity("nothing open", force=True)
    assert err.getvalue() == before
    quiet = runtime.progress(5, "quiet", quiet=True)
    runtime.activity("not shown", force=True)
    assert getattr(quiet, "postfix", None) is None
    quiet.close()


def test_activity_redraws_at_most_every_fifth_of_a_second(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = runtime.progress(1, "x")
    draws = []
    bar.refresh = lambda *a, **k: draws.append(1)
    for i in range(50):
        runtime.activity(f"query {i}")
    bar.close()
    assert bar.postfix == "query 49" and len(draws) <= 2


def test_autoattack_reports_each_sub_attack_and_its_restarts(setup, shown, pyautoattack_only):
    model, x, y = setup
    atk = create_attack("aa", model, ThreatModel("Linf", 0.002), n_iter=2, n_queries=4, n_target_classes=3)
    atk(x, y)
    steps = list(dict.fromkeys(shown))
    for expected in ("AutoAttack (1/4): APGD-CE 1/1", "AutoAttack (2/4): APGD-T 1/3", "AutoAttack (2/4): APGD-T 3/3",
                     "AutoAttack (3/4): FAB-T 3/3", "AutoAttack (4/4): Square 1/1, query 4/4"):
        assert expected in steps, steps
    order = [s.split(":")[1].split()[0] for s in steps]
    assert order.index("APGD-CE") < order.index("APGD-T") < order.index("FAB-T") < order.index("Square")
    assert max(int(m.group(1)) for s in steps if (m := re.search(r"query (\d+)/4", s))) == 4


def test_autoattack_tracking_leaves_the_attack_unchanged(setup, shown, pyautoattack_only):
    import pyautoattack

    from advkit_autoattack import backends

    model, x, y = setup
    budget = dict(n_iter=3, n_queries=10, n_target_classes=2)
    ours = create_attack("aa", model, ThreatModel("Linf", 0.05), **budget)(x, y)
    ref = pyautoattack.AutoAttack(model, norm="Linf", eps=0.05, version="standard", seed=0, device=x.device)
    ref.verbose = False
    backends.set_budget(ref, **budget)
    with backends.quiet([]):
        expected, _ = ref.run_standard_evaluation(x.clone(), y.clone(), batch_size=250)
    assert shown and torch.equal(ours, expected)


def test_square_reports_queries_and_is_unchanged(setup, shown):
    import torchattacks

    model, x, y = setup
    atk = create_attack("square", model, ThreatModel("Linf", 0.01), n_queries=30)
    ours = atk(x, y)
    assert [(st.forward, st.backward) for st in atk.stages] == [(31, 0)]
    assert "Square: restart 1/1, query 30/30" in shown and "Square: restart 1/1, query 1/30" in shown
    ref = torchattacks.Square(model, norm="Linf", eps=0.01, n_queries=30, n_restarts=1, p_init=0.8, seed=0)
    assert torch.equal(ours, ref(x, y))
    shown.clear()
    atk(x, y)  # a second batch counts from the first restart again
    assert "Square: restart 1/1, query 1/30" in shown and not any("restart 2/" in s for s in shown)


def _plan(attack) -> list[tuple[str, int, int]]:
    return [(st.name, st.forward, st.backward) for st in attack.stages]


def test_declared_stages_match_the_attacks_settings(setup, pyautoattack_only):
    model, *_ = setup
    # fra31 standard Linf: APGD-CE 100 iterations, APGD-T 9 targets x 100, FAB-T 9 x 100, Square 5000 queries;
    # APGD: one forward more to start, FAB-T: two forwards per iteration and three more
    assert _plan(create_attack("aa", model)) == [("APGD-CE", 101, 100), ("APGD-T", 909, 900),
                                                 ("FAB-T", 9 * 203, 900), ("Square", 5001, 0)]
    # plus: APGD-CE/DLR 5 restarts, FAB 5 restarts with one backward per class and iteration
    plus = dict((n, (f, b)) for n, f, b in _plan(create_attack("aa-plus", model)))
    assert plus["APGD-CE"] == (505, 500) and plus["FAB"] == (5 * 203, 5 * 100 * 10)
    assert _plan(create_attack("aa-rand", model)) == [("APGD-CE", 101 * 20, 100 * 20), ("APGD-DLR", 101 * 20, 2000)]
    assert _plan(create_attack("aa", model, attacks="apgd-t", n_iter=7, n_target_classes=2)) == [("APGD-T", 16, 14)]
    assert _plan(create_attack("pgd", model, steps=20)) == [("PGD", 21, 20)]
    assert _plan(create_attack("cw", model)) == [("CW", 51, 50)]
    assert _plan(create_attack("fgsm", model)) == [("FGSM", 1, 1)]


@pytest.mark.parametrize("steps", [1, 7])
def test_counted_passes_equal_the_analytic_count_of_pgd(setup, steps):
    """PGD-k on n points: k forward and k backward passes of each point (torchattacks' PGD), counted."""
    model, x, y = setup
    atk = create_attack("pgd", model, ThreatModel("Linf", 0.05), steps=steps)
    out = atk.run(x, y)
    assert out.passes.as_tuple() == (steps * len(x), steps * len(x), steps, steps)
    out = create_attack("fgsm", model, ThreatModel("Linf", 0.05)).run(x[:4], y[:4])
    assert (out.passes.forward, out.passes.backward) == (4, 4)


def test_counted_passes_follow_the_points_autoattack_still_works_on(setup, pyautoattack_only):
    """APGD-T attacks only the points still robust: the count is below the declared worst case."""
    model, x, y = setup
    atk = create_attack("aa", model, ThreatModel("Linf", 0.3), attacks="apgd-ce,apgd-t", n_iter=5, n_target_classes=2)
    out = atk.run(x, y)
    worst = sum(st.backward for st in atk.stages) * len(x)
    assert 0 < out.passes.backward <= worst


def test_plan_turns_stages_into_a_range_and_a_live_estimate():
    from advkit._internal.cost import AttackPlan, Clock, InBatch, Plan
    from advkit._internal.passes import Passes, Stage

    clock = Clock({"forward": 1e-3, "backward": 3e-3})  # a backward pass alone: 2 ms per image
    pgd = AttackPlan("pgd", [Stage("PGD", 10, 10)])
    aa = AttackPlan("aa", [Stage("APGD-CE", 100, 100), Stage("Square", 1000, 0)])
    plan = Plan([pgd, aa], clock, correct=100, independent=False, batch_size=50)
    pgd.points = 100
    low, high = plan.range()
    # by hand: pgd 100 x 10 x 3 ms = 3 s; aa, nothing broken: 100 x (100 x 3 ms + 1000 x 1 ms) = 130 s;
    # low: aa's first stage only, 100 x 100 x 3 ms = 30 s
    assert high == pytest.approx(133.0) and low == pytest.approx(33.0)
    # the first batch of pgd broke 40 of its 50 points: aa should see 10 + 50 x 0.2 = 20 points
    pgd.done_points, pgd.done_batches, pgd.broken = 50, 1, 40
    pgd.done_passes = Passes(500, 500, 10, 10)
    assert plan.expected_points(1, breaks=True) == pytest.approx(20)
    assert plan.remaining() == pytest.approx(1.5 + 20 * 1.3)
    # low end: pgd broke 80 %, so 80 % of aa's points are taken to break in its first stage (APGD-CE: 0.3 s each)
    assert plan.range()[0] == pytest.approx(1.5 + 20 * (0.2 * 1.3 + 0.8 * 0.3))
    square = AttackPlan("square", [Stage("Square", 5001, 0, early_stop=True)])
    assert square.cost(10, 1, broken=1.0) == Passes(10, 0, 1, 0)  # each point broken at its first query
    # inside aa's first batch: 20 points, Square (stage 1) reached with 8 points live, 3000 forwards done
    plan.current, aa.points = 1, 20
    plan.batch = InBatch(20, Passes(), stage=1, stage_start=Passes(2000, 2000), live=8)
    now = Passes(5000, 2000)
    assert plan.batch.remaining(aa, now) == Passes(8 * 1000 - 3000, 0, 1000, 0)
    assert plan.remaining(now) == pytest.approx(5.0)
    assert [runtime.format_seconds(t) for t in (42, 420, 5700)] == ["42 s", "7 min", "1 h 35 min"]


def test_calibration_splits_calls_and_images(setup):
    model, x, y = setup
    per = cost.calibrate(model, torch.cat([x] * 8), torch.cat([y] * 8))
    assert per["forward"] > 0 and per["backward"] > per["forward"] * 0.5
    assert per["forward_call"] >= 0 and per["forward_image"] > 0


class _Bar:
    """Records where a progress bar is moved to."""

    disable = True  # no drawing (show_eta and activity skip it)

    def __init__(self):
        self.n, self.positions = 0.0, []

    def update(self, delta):
        self.n += delta
        self.positions.append(self.n)


@pytest.fixture
def fast_clock(monkeypatch):
    """Every pass looks 1 s after the previous one, so the meter redraws on each."""
    import advkit._internal.meter as meter

    ticks = iter(range(10**9))
    clock = staticmethod(lambda: float(next(ticks)))
    monkeypatch.setattr(meter, "time", type("T", (), {"monotonic": clock, "perf_counter": clock}))


@pytest.mark.parametrize("name, params", [("pgd", {"steps": 5}), ("art.pgd", {"max_iter": 5}),
                                          ("aa", {"n_iter": 3, "n_queries": 5, "n_target_classes": 2})])
def test_bar_moves_inside_one_batch_for_every_family(setup, fast_clock, pyautoattack_only, name, params):
    from advkit._internal.meter import Meter

    model, x, y = setup
    atk = create_attack(name, model, ThreatModel("Linf", 0.003), **params)
    bar = _Bar()
    meter = Meter(bar, atk)
    meter.start(len(x))
    out = atk.run(x, y)
    meter.stop()
    inside = [p for p in bar.positions if 0 < p < len(x)]
    assert len(set(inside)) >= 3, bar.positions  # moved at least three times before the batch ended
    assert inside == sorted(inside)
    meter.done(len(x), out.passes, 0, 1.0)
    assert bar.n == len(x)


def test_training_validation_bar_moves_inside_its_batch(setup, fast_clock, monkeypatch):
    from types import SimpleNamespace

    import advkit._internal.training.validation as validation

    model, x, y = setup
    bars = []

    def recording(total, desc, **kw):
        bars.append(_Bar())
        bars[-1].close = lambda: None
        return bars[-1]

    monkeypatch.setattr(validation, "progress", recording)
    dist = SimpleNamespace(rank=0, world=1, all_sum=lambda values, device: values)
    v = validation.Validator(model, x, y, ThreatModel("Linf", 0.003), "pgd:steps=6", stochastic=False, eot=1,
                             batch_size=len(x), dist=dist, quiet=True)
    v(1)
    inside = [p for p in bars[0].positions if 0 < p < len(x)]
    assert len(set(inside)) >= 3 and bars[0].n == len(x)
