"""The audit: registered checks, each flagging the model it is about and passing a sound one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit._internal.errors import UserError
from advkit._internal.evaluation.engine import evaluate
from advkit._internal.plugins import registry

OPTS = {"square": {"n_queries": 300}, "pgd": {"steps": 5}}


@pytest.fixture(scope="module")
def robust_cnn(fmnist_test):
    from advkit._internal.models import load_model

    return load_model("smallcnn-fmnist-at", num_classes=10, input_shape=fmnist_test.info.input_shape).eval()


class Quantized(nn.Module):
    """Input quantization: gradients are zero almost everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


class Softmax(nn.Module):
    """Returns probabilities instead of logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(1)


class Noisy(nn.Module):
    """Random at test time: logits plus Gaussian noise."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) + 2.0 * torch.randn(x.shape[0], 10, device=x.device)


def audit(model, data, spec="all:n=30", **kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # masked models also warn about their gradients
        r = evaluate(model, data, ["pgd"], eps="0.1", audit=spec, attack_opts=OPTS, quiet=True, **kw)
    return {c["check"]: c for c in r.audit}, r


def flagged(checks) -> set[str]:
    return {name for name, c in checks.items() if not c["passed"]}


def test_every_builtin_check_comes_through_the_hook():
    names = registry("check").names()
    for name in ("probability-outputs", "batch-dependent", "few-classes", "unavailable-gradients",
                 "unstable-predictions", "silent-success", "incomplete-optimization", "non-converging-restarts",
                 "transfer-failure", "eps-monotone", "more-steps", "black-box-gap"):
        assert name in names


def test_a_sound_adversarially_trained_model_raises_no_flag(robust_cnn, fmnist_test):
    checks, r = audit(robust_cnn, fmnist_test.first(60))
    assert flagged(checks) == set(), checks
    assert all(c["points"] is None or c["points"] <= 30 for c in checks.values())
    assert "No check flagged" in str(r)
    assert not any("declared cost is wrong" in n for n in r.meta["notes"]), r.meta["notes"]
    for name, c in checks.items():  # every built-in check within what it announced, passes outside attacks included
        spent, announced = c["passes"]["spent"], c["passes"]["announced"]
        assert spent["forward"] <= announced["forward"] and spent["backward"] <= announced["backward"], (name, c)


def test_input_quantization_is_flagged_by_unavailable_gradients(robust_cnn, fmnist_test):
    checks, r = audit(Quantized(robust_cnn).eval(), fmnist_test.first(60))
    g = checks["unavailable-gradients"]
    assert not g["passed"] and g["flagged"] >= 25 and g["remedy"] == "bpda"
    assert "docs/audit.md#unavailable-gradients" in str(r)


def test_probability_outputs_are_flagged(robust_cnn, fmnist_test):
    checks, _ = audit(Softmax(robust_cnn).eval(), fmnist_test.first(60), "probability-outputs,few-classes:n=30")
    assert set(checks) == {"probability-outputs", "few-classes"}
    assert not checks["probability-outputs"]["passed"] and checks["probability-outputs"]["flagged"] == 30
    assert checks["few-classes"]["passed"]


def test_a_random_model_is_flagged_by_unstable_predictions(robust_cnn, fmnist_test):
    checks, _ = audit(Noisy(robust_cnn).eval(), fmnist_test.first(60), "unstable-predictions:n=30", draws=2, eot=2)
    c = checks["unstable-predictions"]
    assert not c["passed"] and c["remedy"] == "eot" and "EOT over 2" in c["detail"]


def test_silent_success_counts_points_an_iterate_broke(robust_cnn, fmnist_test):
    """A model fooled only where the mean pixel change is about eps/2: PGD's random start lands there, its
    sign steps then push the iterate to the corners of the ball (mean change near eps), where it is not."""

    class Middle(nn.Module):
        def __init__(self, model, x0):
            super().__init__()
            self.model, self.x0 = model, x0

        def forward(self, x):
            out = self.model(x)
            d = (x.reshape(len(x), 1, -1) - self.x0.reshape(1, len(self.x0), -1)).abs().mean(2).min(1).values
            mid = (d > 0.03) & (d < 0.07)  # a random start (mean change eps/2 = 0.05), not the clean point
            return torch.where(mid[:, None], out.roll(1, dims=1) * 10, out)

    data = fmnist_test.first(60)
    x0 = torch.stack([data[i][0] for i in range(60)])
    checks, _ = audit(Middle(robust_cnn, x0).eval(), data, "silent-success:n=30")
    assert not checks["silent-success"]["passed"] and checks["silent-success"]["flagged"] >= 2, checks


def test_transfer_failure_counts_examples_that_fool_the_surrogate_but_not_the_model(robust_cnn, fmnist_test):
    """Against an independent run of torchattacks' PGD-100 on the surrogate, judged on both models."""
    import torchattacks

    from advkit._internal.models import load_model

    data = fmnist_test.first(40)
    standard = load_model("smallcnn-fmnist", num_classes=10, input_shape=(1, 28, 28)).eval()
    checks, _ = audit(robust_cnn, data, "transfer-failure:n=100", surrogate=standard)  # the sample: every correct point
    c = checks["transfer-failure"]
    x, y = data.tensors()
    with torch.no_grad():
        correct = robust_cnn(x).argmax(1) == y
        x, y, right = x[correct], y[correct], standard(x[correct]).argmax(1) == y[correct]
    torch.manual_seed(0)
    adv = torchattacks.PGD(standard, eps=0.1, alpha=0.025, steps=100, random_start=True)(x, y)
    with torch.no_grad():  # fooled the surrogate, which was right on the clean input, and not the model
        expected = int((right & (standard(adv).argmax(1) != y) & (robust_cnn(adv).argmax(1) == y)).sum())
    assert c["points"] == len(y) and not c["passed"] and c["remedy"] == "bpda", c
    assert f"of the {int(right.sum())} points it classifies correctly" in c["detail"], c
    assert abs(c["flagged"] - expected) <= 3 and expected > 0.5 * len(y), (c, expected)  # random starts differ
    spent, announced = c["passes"]["spent"], c["passes"]["announced"]
    assert 0 < spent["forward"] <= announced["forward"] and 0 < spent["backward"] <= announced["backward"], c
    itself, _ = audit(robust_cnn, data, "transfer-failure:n=100", surrogate=robust_cnn)
    assert itself["transfer-failure"]["passed"] and itself["transfer-failure"]["flagged"] == 0  # fools it: fools it
    alone, r = audit(robust_cnn, data, "transfer-failure:n=100")
    assert not alone["transfer-failure"]["applies"] and "no surrogate model" in alone["transfer-failure"]["detail"]
    _, unused = audit(robust_cnn, data, "few-classes:n=10", surrogate=standard)  # given, and no check reads it
    assert any("no check used --surrogate" in n for n in unused.meta["notes"]), unused.meta["notes"]


def test_unknown_check_and_bad_n_are_one_line_errors(robust_cnn, fmnist_test):
    with pytest.raises(UserError, match="silent-success"):
        audit(robust_cnn, fmnist_test.first(10), "silent-sucess")
    with pytest.raises(UserError, match="n must be"):
        audit(robust_cnn, fmnist_test.first(10), "all:n=0")


def test_adaptive_bpda_breaks_the_quantized_model_below_plain_pgd(robust_cnn, fmnist_test):
    data = fmnist_test.first(40)
    quantized = Quantized(robust_cnn).eval()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantized model's gradients are zero: the run warns
        plain = evaluate(quantized, data, ["pgd"], eps="0.1", attack_opts={"pgd": {"steps": 5}}, quiet=True)
        adapted = evaluate(quantized, data, ["pgd"], eps="0.1", attack_opts={"pgd": {"steps": 5}}, quiet=True,
                           adaptive="bpda",
                           surrogate=robust_cnn)
    row = adapted.adaptive_attacks[0]
    assert row["remedy"] == "bpda" and row["applied"] and row["accuracy_before"] == plain.robust_accuracy
    assert adapted.robust_accuracy == row["accuracy_after"] < plain.robust_accuracy - 0.05  # plain PGD is stuck
    unquantized = evaluate(robust_cnn, data, ["pgd"], eps="0.1", attack_opts={"pgd": {"steps": 50}}, quiet=True)
    assert adapted.robust_accuracy <= unquantized.robust_accuracy + 0.05  # BPDA reaches the undefended level
    assert any(s["broken_by"] == "adaptive:bpda" for s in adapted.samples)
    assert "## Adaptive attacks" in str(adapted)


def test_adaptive_auto_follows_the_flags_and_says_what_it_could_not_apply(robust_cnn, fmnist_test):
    checks, r = audit(Quantized(robust_cnn).eval(), fmnist_test.first(30), "gradients,probability-outputs:n=20",
                      adaptive=True)
    assert not checks["unavailable-gradients"]["passed"] and checks["probability-outputs"]["passed"]
    assert r.adaptive_attacks == [{"remedy": "bpda", "applied": False,
                                   "why": "needs a differentiable surrogate of the model (--surrogate MODEL)"}]
    assert "| bpda | no: needs a differentiable surrogate" in str(r)


def test_adaptive_names_are_checked(robust_cnn, fmnist_test):
    with pytest.raises(UserError, match="did you mean 'bpda'"):
        evaluate(robust_cnn, fmnist_test.first(10), ["pgd"], eps="0.1", adaptive="bdpa", quiet=True)
    with pytest.raises(UserError, match=r"remedies take no parameters \(bpda:x=1\)"):
        evaluate(robust_cnn, fmnist_test.first(10), ["pgd"], eps="0.1", adaptive="bpda:x=1", quiet=True)
    with pytest.raises(UserError, match="--surrogate is used only by --adaptive .* audit checks that attack a surrogate"):
        evaluate(robust_cnn, fmnist_test.first(10), ["pgd"], eps="0.1", surrogate=robust_cnn, quiet=True)
    with pytest.raises(UserError, match="surrogate: give a model name, a checkpoint path or an nn.Module, not int"):
        evaluate(robust_cnn, fmnist_test.first(10), ["pgd"], eps="0.1", adaptive="transfer", surrogate=3, quiet=True)


def test_audit_spec_all_wins_and_one_sample_size():
    from advkit._internal.evaluation.audit import SAMPLE, parse_audit

    assert parse_audit("all,silent-success") == (None, SAMPLE)  # every check, not only the one named
    assert parse_audit("silent-success:n=5,gradients:n=5") == (["silent-success", "unavailable-gradients"], 5)
    with pytest.raises(UserError, match="n is given as 5 and 7"):
        parse_audit("silent-success:n=5,gradients:n=7")


def test_a_resumed_run_refuses_another_surrogate(robust_cnn, fmnist_test, tmp_path):
    """Adaptive attacks through one surrogate are never read back for another; -a none reports their worst case."""
    data = fmnist_test.first(12)
    r = evaluate(robust_cnn, data, "none", eps="0.1", adaptive="transfer", surrogate=robust_cnn, quiet=True,
                 out=tmp_path, attack_opts=OPTS)
    assert "**worst case**" in str(r) and "the worst case is the adaptive attacks' alone" in str(r)
    again = evaluate(robust_cnn, data, "none", eps="0.1", adaptive="transfer", surrogate=robust_cnn, quiet=True,
                     out=tmp_path, attack_opts=OPTS)
    assert again.robust_accuracy == r.robust_accuracy and again.meta["resumed_batches"] >= 2
    with pytest.raises(UserError, match=r"holds a run with other settings \(surrogate\)"):
        evaluate(robust_cnn, data, "none", eps="0.1", adaptive="transfer", surrogate=Quantized(robust_cnn).eval(),
                 quiet=True, out=tmp_path, attack_opts=OPTS)


# Attacks that return what any iterate broke, read from their libraries' code (not from advkit's declarations):
# AutoAttack and its APGD, FAB and Square keep x_best_adv / stop per point; torchattacks' ports do the same.
KEEP_BEST = {"aa", "aa-rand", "aa-plus", "aa.apgd-ce", "aa.apgd-dlr", "aa.apgd-t", "aa.fab", "aa.fab-t", "aa.square",
             "fast", "apgd", "apgdt", "fab", "square", "ta.apgd", "ta.apgdt", "ta.fab", "ta.autoattack", "ta.square",
             "art.square"}


@pytest.mark.parametrize("suite", [["pgd"], ["pgd", "apgd"]])
def test_a_flag_without_an_adaptive_attack_is_listed_as_not_applied(robust_cnn, fmnist_test, suite):
    """silent-success's remedy is a choice of attacks: the row names the suite's attacks that keep their best
    iterate, or registered ones to add (never one that returns its last iterate, like PGD)."""
    import types
    import warnings

    import advkit.plugin
    from advkit._internal import plugins
    from advkit.plugin import Check, finding

    class Flags(Check):
        remedy = "best-iterate"

        def run(self, ctx) -> dict:
            return finding(self, False, "always", flagged=len(ctx.points), points=len(ctx.points))

    mod = types.ModuleType("advkit_test_flags")
    mod.advkit_register_checks = advkit.plugin.hookimpl(lambda register: register("always-flags", Flags))
    plugins.register_plugin(mod)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(robust_cnn, fmnist_test.first(12), suite, eps="0.1", audit="always-flags:n=5",
                         adaptive=True, attack_opts={"pgd": {"steps": 5}, **({"apgd": {"steps": 3}} if "apgd" in suite else {})}, quiet=True)
    finally:
        plugins.pm.unregister(mod)
        plugins._registries.clear()
    [row] = r.adaptive_attacks
    assert row["remedy"] == "best-iterate" and row["applied"] is False
    if "apgd" in suite:
        assert row["why"].startswith("the suite's apgd already keeps every point an iterate broke")
    else:
        assert row["why"].startswith("add an attack that keeps its best iterate to --attacks (")
        named = row["why"].split("(")[1].split(")")[0].replace(", ...", "").split(", ")
        assert named and set(named) <= KEEP_BEST, named
    assert "pgd returns its last iterate" in row["why"]
    assert f"| best-iterate | no: {row['why'][:30]}" in str(r)
    assert "No check flagged" not in str(r)


def test_adaptive_best_iterate_by_name_says_which_attacks_to_add():
    from advkit._internal.evaluation.adaptive import parse_adaptive

    with pytest.raises(UserError, match=r"best-iterate is a choice of attacks.*--attacks \((.+)\)$") as e:
        parse_adaptive("eot,best-iterate")
    named = [n for n in str(e.value).rsplit("(", 1)[1].rstrip(")").split(", ") if n != "..."]
    assert named and set(named) <= KEEP_BEST
    # gradient attacks first: a black-box search is not what a gradient attack's last iterate asks for
    assert not any(registry("attack").get(n).can("black_box") for n in named), named


def test_keeps_best_is_declared_by_exactly_the_attacks_that_keep_what_they_broke():
    attacks = registry("attack")
    declared = {e.name for e in attacks if e.can("keeps_best") or e.can("early_stop")}
    assert declared == KEEP_BEST


class Saturated(nn.Module):
    """Logits a thousand times too large (a model deployed at a lower temperature than it was trained at)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return 1000.0 * self.model(x)


def test_saturated_logits_are_flagged_and_rescale_breaks_them(robust_cnn, fmnist_test):
    data = fmnist_test.first(40)
    opts = {"pgd": {"steps": 5}}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero gradients: the run warns
        r = evaluate(Saturated(robust_cnn).eval(), data, ["pgd"], eps="0.1", attack_opts=opts, quiet=True,
                     audit="unavailable-gradients:n=30", adaptive=True)
    g = r.audit[0]
    assert not g["passed"] and g["remedy"] == "rescale" and "saturated softmax" in g["detail"]
    row = r.adaptive_attacks[0]
    assert row["remedy"] == "rescale" and row["applied"] and row["accuracy_before"] > row["accuracy_after"] + 0.05
    reference = evaluate(robust_cnn, data, ["pgd"], eps="0.1", attack_opts={"pgd": {"steps": 50}}, quiet=True)
    assert abs(r.robust_accuracy - reference.robust_accuracy) <= 0.05  # the unscaled model's level


def test_each_check_reports_the_passes_it_spent_against_what_it_announced(robust_cnn, fmnist_test):
    """A check whose cost() understates what it runs is named in the report's notes; the built-in checks
    stay within what they announce, and the one that runs an attack spent its passes."""
    import types

    import advkit.plugin
    from advkit._internal import plugins
    from advkit.plugin import Check, Passes, finding

    class Understated(Check):
        def cost(self, ctx) -> Passes:
            return Passes()

        def run(self, ctx) -> dict:
            res = ctx.attack("pgd", tag="understated", steps=3)
            return finding(self, True, f"ran pgd on {len(res)} points", flagged=0, points=len(res))

    mod = types.ModuleType("advkit_test_understated")
    mod.advkit_register_checks = advkit.plugin.hookimpl(lambda register: register("understated", Understated))
    plugins.register_plugin(mod)
    try:
        checks, r = audit(robust_cnn, fmnist_test.first(40), "understated,eps-monotone:n=10")
    finally:
        plugins.pm.unregister(mod)
        plugins._registries.clear()
    spent = checks["understated"]["passes"]["spent"]
    # pgd with 3 steps on 10 points: 3 gradient steps each (and at most a forward per step to judge), never 0
    assert spent["backward"] >= 3 * 10 and checks["understated"]["passes"]["announced"]["forward"] == 0
    assert any("'understated' spent" in n and "its declared cost is wrong" in n for n in r.meta["notes"]), r.meta["notes"]
    mono = checks["eps-monotone"]["passes"]
    assert 0 < mono["spent"]["backward"] <= mono["announced"]["backward"]
    assert 0 < mono["spent"]["forward"] <= mono["announced"]["forward"]
    assert "passes spent / announced" in str(r)
    checks, _ = audit(robust_cnn, fmnist_test.first(40), "unavailable-gradients,probability-outputs:n=10")
    for name in ("unavailable-gradients", "probability-outputs"):  # passes outside attacks count too
        p = checks[name]["passes"]
        assert 0 < p["spent"]["forward"] <= p["announced"]["forward"], (name, p)


def test_audit_attacks_on_a_cpu_are_cut_into_resumable_batches(robust_cnn, fmnist_test, tmp_path, monkeypatch):
    """Each logged batch of an audit attack holds at most CPU_BATCH_PASSES declared forward passes, so an
    expensive check (a black-box attack through EOT) resumes batch by batch; a re-run redoes none of them."""
    import json

    from advkit._internal.evaluation import audit as audit_module

    monkeypatch.setattr(audit_module, "CPU_BATCH_PASSES", 40)
    data = fmnist_test.first(40)
    r = evaluate(robust_cnn, data, ["pgd"], eps="0.1", audit="eps-monotone:n=12", attack_opts=OPTS, quiet=True,
                 out=tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    audited = [rec for rec in recs if rec["stage"].startswith("audit:")]
    stages = {rec["stage"] for rec in audited}
    assert stages and all(sum(rec["stage"] == s for rec in audited) >= 2 for s in stages)
    assert all(0 < rec["passes"]["forward"] <= 40 for rec in audited), [rec["passes"] for rec in audited]
    assert sum(len(rec["index"]) for rec in audited) == 12 * len(stages)  # every sampled point, once per stage
    assert any("audit: pgd ran in batches of" in n for n in r.meta["notes"]), r.meta["notes"]  # said, recorded
    again = evaluate(robust_cnn, data, ["pgd"], eps="0.1", audit="eps-monotone:n=12", attack_opts=OPTS, quiet=True,
                     out=tmp_path)
    assert len((tmp_path / "progress.jsonl").read_text().splitlines()) == len(recs)  # nothing redone, nothing added
    assert again.audit == r.audit


def test_the_eot_remedy_batches_count_its_own_samples(robust_cnn, fmnist_test, tmp_path, monkeypatch):
    """The eot remedy attacks through 50 samples, not the run's 20: its CPU batches stay within the cap too."""
    import json
    import warnings

    from advkit._internal.evaluation import audit as audit_module

    monkeypatch.setattr(audit_module, "CPU_BATCH_PASSES", 6000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate(Noisy(robust_cnn).eval(), fmnist_test.first(6), ["pgd"], eps="0.1", adaptive="eot", quiet=True,
                 attack_opts={"pgd": {"steps": 5}}, out=tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    eot = [rec for rec in recs if "adaptive:eot" in rec["stage"]]
    assert eot and all(0 < rec["passes"]["forward"] <= 6000 for rec in eot), [rec["passes"] for rec in eot]


def test_traced_checks_resume_from_the_log(robust_cnn, fmnist_test, tmp_path, monkeypatch):
    """The trace-based indicators log every point's margins with its batch: a re-run of a finished audit attacks
    nothing and finds the same."""
    import json

    from advkit._internal.evaluation.runner import Runner

    data = fmnist_test.first(30)
    spec = "silent-success:n=12,non-converging-restarts:n=12"
    r = evaluate(robust_cnn, data, ["pgd"], eps="0.1", audit=spec, attack_opts=OPTS, quiet=True, out=tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    traced = [rec for rec in recs if ":trace:" in rec["stage"]]
    assert len({rec["stage"] for rec in traced}) == 3  # the three traced runs, shared by the two checks
    assert all(len(rec["extra"]["margins"]) == len(rec["index"]) and all(rec["extra"]["margins"]) for rec in traced)

    def attacked(self, fn, b, chunk, who, stage):
        raise AssertionError(f"{stage} batch {b} was redone")

    monkeypatch.setattr(Runner, "_call", attacked)
    again = evaluate(robust_cnn, data, ["pgd"], eps="0.1", audit=spec, attack_opts=OPTS, quiet=True, out=tmp_path)
    assert again.audit == r.audit
    assert again.meta["resumed_batches"] == len(recs)  # every batch of the log read back, the audit's included


def test_adaptive_margin_breaks_saturated_logits_with_a_scale_invariant_loss(robust_cnn, fmnist_test):
    """APGD on the DLR loss ignores the logits' scale: on the saturated model it reaches what plain PGD reaches
    on the unscaled one, where PGD on the saturated model is stuck."""
    import warnings

    data = fmnist_test.first(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero gradients: the run warns
        r = evaluate(Saturated(robust_cnn).eval(), data, ["pgd"], eps="0.1", quiet=True, adaptive="margin",
                     attack_opts={"pgd": {"steps": 5}, "apgd-dlr": {"n_iter": 20}})  # options under an alias
    row = r.adaptive_attacks[0]
    assert row["remedy"] == "margin" and row["applied"] and row["attack"] == "aa.apgd-dlr"
    assert row["params"] == {"n_iter": 20} and "| margin | yes | aa.apgd-dlr (n_iter=20) |" in str(r)
    assert row["accuracy_before"] > row["accuracy_after"] + 0.05  # plain PGD is stuck, the margin loss is not
    reference = evaluate(robust_cnn, data, ["pgd"], eps="0.1", attack_opts={"pgd": {"steps": 50}}, quiet=True)
    assert r.robust_accuracy <= reference.robust_accuracy + 0.05
    assert any(s["broken_by"] == "adaptive:margin" for s in r.samples)


class StubContext:
    """What BlackBox.run reads, with canned attack results: ``held`` of the sample's points survive every
    white-box run, and the black-box attack breaks ``broken`` of those."""

    def __init__(self, points: int, held: int, broken: int):
        self.points, self.memo = list(range(points)), {}
        self.white = {i: {"score": float(i < held)} for i in self.points}
        self.black = {i: {"score": float(i >= broken)} for i in range(held)}

    def reference(self, role):
        return {"white-box": "pgd", "black-box": "square"}[role]

    def iterations(self, name):
        return "steps"

    def parameter(self, name, param):
        return 10

    def options(self, name):
        return {}

    def attack(self, name, *, tag, points=None, **params):
        assert tag == "black-box" or name == "pgd"
        return {i: self.black[i] for i in points} if tag == "black-box" else self.white


@pytest.mark.parametrize("points,held,broken,flagged", [
    (100, 54, 3, False),  # a sound model's few borderline points (the old fixed 2 % flagged this)
    (100, 54, 6, False),  # P(Bin(54, 0.05) >= 6) = 0.086: still noise
    (100, 54, 7, True),  # P(Bin(54, 0.05) >= 7) = 0.037: beyond it
    (100, 20, 4, True),  # the bound is on the survivors: 4 of 20 is beyond noise, 4 of 100 would not be
    (100, 1, 1, False),  # one point never flags
    (100, 0, 0, False),
])
def test_black_box_gap_decides_on_the_survivors_with_the_binomial_bound(points, held, broken, flagged):
    from advkit_audit.carlini import BlackBox

    check = BlackBox()
    check.name = "black-box-gap"
    c = check.run(StubContext(points, held, broken))
    assert (c["passed"], c["flagged"], c["points"]) == (not flagged, broken, held), c
