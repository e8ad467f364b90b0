"""Progress inside an attack call (AutoAttack's sub-attacks and restarts, Square's queries), the passes
each attack declares, and the cost estimate built from them."""

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
        monkeypatch.setattr(module, "activity", lambda text, force=False: lines.append(text))
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
    assert atk.extra["passes"] == {"forward": 30}
    assert "Square: restart 1/1, query 30/30" in shown and "Square: restart 1/1, query 1/30" in shown
    ref = torchattacks.Square(model, norm="Linf", eps=0.01, n_queries=30, n_restarts=1, p_init=0.8, seed=0)
    assert torch.equal(ours, ref(x, y))
    shown.clear()
    atk(x, y)  # a second batch counts from the first restart again
    assert "Square: restart 1/1, query 1/30" in shown and not any("restart 2/" in s for s in shown)


def test_declared_passes_match_the_attacks_settings(setup, pyautoattack_only):
    model, *_ = setup
    # fra31 standard Linf: APGD-CE 100 iterations, APGD-T 9 targets x 100, FAB-T 9 x 100, Square 5000 queries
    assert create_attack("aa", model).extra["passes"] == {"backward": 100 + 900 + 900, "forward": 5000}
    # plus: APGD-CE/DLR 5 restarts, FAB 5 restarts x 10 classes, Square, APGD-T, FAB-T
    assert create_attack("aa-plus", model).extra["passes"] == {"backward": 500 + 500 + 5000 + 900 + 900, "forward": 5000}
    # rand: APGD-CE and APGD-DLR with EOT over 20 samples
    assert create_attack("aa-rand", model).extra["passes"] == {"backward": 2 * 100 * 20, "forward": 0}
    sub = create_attack("aa", model, attacks="apgd-t", n_iter=7, n_target_classes=2)
    assert sub.extra["passes"] == {"backward": 14, "forward": 0}
    assert create_attack("pgd", model, steps=20).extra["passes"] == {"backward": 20}
    assert create_attack("cw", model).extra["passes"] == {"backward": 50}
    assert "passes" not in create_attack("fgsm", model).extra


def test_cost_estimate_from_calibration(setup, monkeypatch):
    from types import SimpleNamespace

    model, x, y = setup
    per = cost.calibrate(model, x, y)
    assert per["forward"] > 0 and per["backward"] > 0
    slow = nn.Sequential(model)  # another target model (as an EOT average would be), timed on its own
    times = {id(model): {"forward": 0.002, "backward": 0.006}, id(slow): {"forward": 0.02, "backward": 0.06}}
    monkeypatch.setattr(cost, "calibrate", lambda m, *a, **k: times[id(m)])
    passes = {"backward": 1900, "forward": 5000}
    # by hand: 14 points x (1900 x 6 ms + 5000 x 2 ms) = 14 x 21.4 s = 299.6 s
    assert cost.estimate_seconds(times[id(model)], passes, 14) == pytest.approx(299.6)
    aa = SimpleNamespace(name="aa", model=model, extra={"passes": passes})
    pgd = SimpleNamespace(name="pgd", model=slow, extra={"passes": {"backward": 100}})  # 14 x 100 x 60 ms = 84 s
    other = SimpleNamespace(name="ta.vmifgsm", model=model, extra={})
    line = cost.cost_estimate([aa, pgd, other], x, y, 14)
    assert line.startswith("estimated time: about 6 min for 2 attack(s) on up to 14 points "
                           "(aa 5 min, pgd 84 s; ta.vmifgsm not estimated;"), line
    assert cost.cost_estimate([SimpleNamespace(name="p", model=model, extra={"passes": {"backward": 10}})], x, y, 14) is None
    assert cost.cost_estimate([other], x, y, 14) is None
    assert [cost.format_seconds(s) for s in (42, 420, 5700)] == ["42 s", "7 min", "1 h 35 min"]

