"""The attack plugins (torchattacks, ART, AutoAttack) on a small trained classifier.

The model is a small CNN trained for a few seconds on the first images of
``fmnist-mini`` (or, when that dataset is not available, on a learnable
synthetic 10-class image task). Budgets are reduced so the file runs in
about a minute on two CPU cores.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from advkit._internal.attack import create_attack
from advkit._internal.errors import UserError
from advkit._internal.plugins import register_plugin, registry
from advkit._internal.threat import ThreatModel

EPS = 0.1  # Linf; large enough to break an undefended Fashion-MNIST model


# --------------------------------------------------------------------------- fixtures


def _synthetic(n: int, seed: int):
    """10 classes: a bright bar whose position encodes the class, on uniform noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for i in range(n):
        r, c = divmod(int(y[i]), 5)
        r0 = 2 + 13 * r + int(torch.randint(0, 3, (1,), generator=g))
        c0 = 1 + 5 * c + int(torch.randint(0, 2, (1,), generator=g))
        x[i, 0, r0 : r0 + 8, c0 : c0 + 4] += 0.5
    return x.clamp(0, 1), y


def _stack(data, n: int):
    n = min(n, len(data))
    xs, ys = zip(*(data[i] for i in range(n)))
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]), torch.as_tensor(ys).long()


def _load():
    try:
        import advkit

        train = advkit.load_dataset("fmnist-mini", split="train")
        test = advkit.load_dataset("fmnist-mini", split="test")
        return _stack(train, 3000), _stack(test, 64), "fmnist-mini"
    except Exception:  # the dataset plugin is optional here
        return _synthetic(3000, 0), _synthetic(64, 1), "synthetic"


class SmallCNN(nn.Module):
    """Takes images in [0, 1] and owns its normalization, like advkit's models."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(7), nn.Flatten(),
            nn.Linear(16 * 49, classes),
        )

    def forward(self, x):
        return self.features((x - 0.5) / 0.5)


@pytest.fixture(scope="module")
def plugins():
    """Make sure the three attack plugins are registered (entry points, or directly)."""
    import advkit_art
    import advkit_autoattack
    import advkit_torchattacks

    reg = registry("attack")
    for name, module in (("ta.pgd", advkit_torchattacks), ("art.pgd", advkit_art), ("aa", advkit_autoattack)):
        if name not in reg:
            register_plugin(module)
    return registry("attack")


@pytest.fixture(scope="module")
def setup(plugins):
    torch.manual_seed(0)
    (x_train, y_train), (x, y), source = _load()
    model = SmallCNN(x_train.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(2):
        perm = torch.randperm(len(x_train))
        for i in range(0, len(x_train), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x, y, source


def acc(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def run(name, model, x, y, threat=None, **params):
    threat = threat or ThreatModel("Linf", EPS)
    attack = create_attack(name, model, threat, **params)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert threat.check(x, x_adv) is None, f"{name}: {threat.check(x, x_adv)}"
    assert acc(model, x_adv, y) <= acc(model, x, y) + 1e-6
    return attack, x_adv


# --------------------------------------------------------------------------- registration


def test_names_registered_without_importing_the_libraries():
    code = (
        "import sys, advkit._internal.plugins as p\n"
        "reg = p.registry('attack')\n"
        "names = {e.name for e in reg if e.provider in ('torchattacks', 'art', 'autoattack')}\n"
        "heavy = [m for m in ('torch', 'torchattacks', 'art', 'pyautoattack', 'autoattack') if m in sys.modules]\n"
        "print(len(names), heavy)\n"
    )
    env = dict(os.environ, ADVKIT_LOAD_PLUGINS="torchattacks,art,autoattack")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, heavy = out.stdout.strip().split(" ", 1)
    assert heavy == "[]" and int(count) >= 80


def test_registry_contents(plugins):
    from advkit_art.catalog import SPECS as ART
    from advkit_torchattacks.catalog import SPECS as TA

    curated = "fgsm pgd pgdl2 cw mifgsm deepfool square apgd apgdt fab eotpgd tpgd jitter".split()
    for name in curated + [f"ta.{s.cls.lower()}" for s in TA] + [f"art.{s.name}" for s in ART]:
        assert name in plugins, name
    for name in ("aa", "autoattack", "aa-rand", "aa-plus", "apgd-ce", "apgd-t", "fab-t", "aa.square", "cw-l2", "pgd-linf"):
        assert name in plugins, name
    assert plugins.get("pgd").provider == "torchattacks"
    assert "10 steps" in plugins.get("pgd").summary and "eps/4" in plugins.get("pgd").summary


def test_torchattacks_catalog_matches_installed_library():
    import torchattacks

    from advkit_torchattacks.catalog import BY_CLASS, SKIPPED

    assert set(torchattacks.__all__) == set(BY_CLASS) | set(SKIPPED)
    for spec in BY_CLASS.values():
        accepted = inspect.signature(getattr(torchattacks, spec.cls).__init__).parameters
        assert set(spec.params) <= set(accepted), spec.cls
        assert spec.budget is None or spec.budget in accepted
        assert ("n_classes" in accepted) == spec.infer_classes, spec.cls
        assert ("norm" in accepted) == spec.takes_norm, spec.cls


def test_art_catalog_matches_installed_library():
    import importlib.util

    import art.attacks.evasion as evasion

    from advkit_art.catalog import SPECS

    for spec in SPECS:
        if spec.requires and importlib.util.find_spec(spec.requires) is None:
            continue
        accepted = inspect.signature(getattr(evasion, spec.cls).__init__).parameters
        wanted = {spec.rename.get(k, k) for k in spec.params} | {a for a in (spec.eps_arg, spec.norm_arg) if a}
        assert wanted <= set(accepted), (spec.name, wanted - set(accepted))


# --------------------------------------------------------------------------- torchattacks


def test_pgd_is_torchattacks_pgd_with_standard_defaults(setup):
    import torchattacks

    model, x, y, _ = setup
    eps = 8 / 255
    attack = create_attack("pgd", model, eps="8/255")
    assert attack.implementation == f"torchattacks {torchattacks.__version__} PGD"
    torch.manual_seed(123)
    ours = attack(x, y)
    torch.manual_seed(123)
    theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)(x, y)
    assert torch.equal(ours, theirs)


def test_pgd_breaks_the_model(setup):
    model, x, y, _ = setup
    clean = acc(model, x, y)
    assert clean > 0.6
    _, x_adv = run("pgd", model, x, y)
    assert acc(model, x_adv, y) < 0.5 * clean


def test_pgd_under_l2_is_pgdl2_and_l1_is_refused(setup):
    model, x, y, _ = setup
    threat = ThreatModel("L2", 1.5)
    attack, x_adv = run("pgd", model, x, y, threat, steps=5)
    assert attack.implementation.endswith("PGDL2")
    assert attack.params == {"steps": 5}
    with pytest.raises(UserError, match="Linf/L2"):
        create_attack("pgd", model, ThreatModel("L1", 10.0))
    with pytest.raises(UserError, match="L2 threat models only"):
        create_attack("pgdl2", model, ThreatModel("Linf", EPS))


CURATED = [
    ("fgsm", {}),
    ("mifgsm", {"steps": 3}),
    ("cw", {"steps": 10}),
    ("deepfool", {"steps": 10}),
    ("square", {"n_queries": 30}),
    ("apgd", {"steps": 5}),
    ("apgdt", {"steps": 3}),
    ("fab", {"steps": 3}),
    ("eotpgd", {"steps": 3, "eot_iter": 2}),
    ("tpgd", {"steps": 3}),
    ("jitter", {"steps": 3}),
]


@pytest.mark.parametrize("name,params", CURATED, ids=[c[0] for c in CURATED])
def test_curated_torchattacks(setup, name, params):
    model, x, y, _ = setup
    attack, _ = run(name, model, x[:32], y[:32], **params)
    assert attack.implementation.startswith("torchattacks ")
    assert attack.black_box == (name == "square")


def test_pgdl2_curated(setup):
    model, x, y, _ = setup
    attack, _ = run("pgdl2", model, x[:32], y[:32], ThreatModel("L2", 1.5), steps=3)
    assert attack.extra["attack_params"]["alpha"] == pytest.approx(1.5 / 4)


TA_SAMPLE = [
    ("ta.bim", {"steps": 3}),
    ("ta.ffgsm", {}),
    ("ta.upgd", {"steps": 3, "loss": "margin"}),
    ("ta.difgsm", {"steps": 3}),
    ("ta.vmifgsm", {"steps": 2, "N": 2}),
    ("ta.spsa", {"nb_sample": 8}),
    ("ta.pgdrs", {"steps": 2, "noise_batch_size": 2}),
    ("ta.apgdt", {"steps": 3}),
    ("ta.eaden", {"max_iterations": 10, "binary_search_steps": 2}),
    ("ta.sparsefool", {"steps": 1}),
    ("ta.onepixel", {"steps": 2, "popsize": 5}),
    ("ta.pixle", {"restarts": 2, "max_iterations": 2, "x_dimensions": "2,5"}),
    ("ta.gn", {}),
]


@pytest.mark.parametrize("name,params", TA_SAMPLE, ids=[c[0] for c in TA_SAMPLE])
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_generic_torchattacks_adapter(setup, name, params):
    model, x, y, _ = setup
    n = 4 if name == "ta.sparsefool" else 16  # SparseFool runs DeepFool image by image
    attack, _ = run(name, model, x[:n], y[:n], **params)
    cls = attack.extra["attack_class"].split(".")[1]
    assert attack.implementation.endswith(f" {cls}")


def test_generic_adapter_maps_the_threat_model(setup):
    model, x, y, _ = setup
    pgd = create_attack("ta.pgd", model, ThreatModel("Linf", 0.2))
    assert pgd.extra["attack_params"]["eps"] == 0.2 and pgd.extra["attack_params"]["alpha"] == pytest.approx(0.05)
    ffgsm = create_attack("ta.ffgsm", model, ThreatModel("Linf", 0.2))
    assert ffgsm.extra["attack_params"]["alpha"] == pytest.approx(0.25)  # FFGSM's own 1.25 eps
    square = create_attack("ta.square", model, ThreatModel("L2", 1.0))
    assert square.extra["attack_params"]["norm"] == "L2" and square.black_box
    vanila, x_adv = run("ta.vanila", model, x[:8], y[:8])
    assert torch.equal(x_adv, x[:8])
    with pytest.raises(UserError, match="Linf threat models only"):
        create_attack("ta.mifgsm", model, ThreatModel("L2", 1.0))
    with pytest.raises(UserError, match="no parameter"):
        create_attack("ta.bim", model, ThreatModel("Linf", 0.1), stepz=3)
    with pytest.raises(UserError, match="3-channel"):
        create_attack("ta.tifgsm", model, ThreatModel("Linf", 0.1))(x[:2], y[:2])


def test_torchattacks_autoattack_is_labelled_reduced(setup):
    model, x, y, _ = setup
    attack = create_attack("ta.autoattack", model)
    assert "not the standard AutoAttack" in attack.implementation
    assert attack.extra["standard_autoattack"] is False


def test_cw_beyond_budget_is_returned_unchanged(setup):
    import torchattacks

    model, x, y, _ = setup
    eps = 0.05
    raw = torchattacks.CW(model, c=1.0, kappa=0.0, steps=30, lr=0.01)(x, y)
    attack, x_adv = run("cw", model, x, y, ThreatModel("Linf", eps), steps=30)
    size = (raw - x).abs().flatten(1).amax(1)
    outside, inside = size > eps + 1e-6, size <= eps
    assert outside.any() and inside.any()
    assert torch.equal(x_adv[outside], x[outside])
    assert torch.equal(x_adv[inside], raw[inside])
    assert attack.minimum_norm is True


def test_attack_under_no_grad_and_string_params(setup):
    model, x, y, _ = setup
    attack = create_attack("pgd", model, eps="8/255", steps="3", alpha="1/255", random_start="false")
    assert attack.params == {"steps": 3, "alpha": pytest.approx(1 / 255), "random_start": False}
    with torch.no_grad():
        x_adv = attack(x[:8], y[:8])
    assert (x_adv - x[:8]).abs().max() > 0


# --------------------------------------------------------------------------- ART


ART_SAMPLE = [
    ("art.fgsm", {}, False),
    ("art.pgd", {"max_iter": 5}, False),
    ("art.autopgd", {"max_iter": 5}, False),
    ("art.carlini-l2", {"max_iter": 5, "binary_search_steps": 2}, False),
    ("art.deepfool", {"max_iter": 10}, False),
    ("art.jsma", {}, False),
    ("art.square", {"max_iter": 30}, True),
    ("art.hopskipjump", {"max_iter": 1, "max_eval": 20, "init_eval": 5, "init_size": 5}, True),
    ("art.simba", {"max_iter": 30}, True),
]


@pytest.mark.parametrize("name,params,black_box", ART_SAMPLE, ids=[c[0] for c in ART_SAMPLE])
def test_art_attacks(setup, name, params, black_box):
    model, x, y, _ = setup
    attack, _ = run(name, model, x[:16], y[:16], **params)
    assert attack.implementation.startswith("ART ")
    assert attack.black_box is black_box


def test_art_pgd_breaks_the_model_and_maps_the_threat(setup):
    import numpy as np

    model, x, y, _ = setup
    attack, x_adv = run("art.pgd", model, x, y)
    assert acc(model, x_adv, y) < 0.5 * acc(model, x, y)
    (art_attack,) = attack.fn.state.values()
    assert art_attack.eps == EPS and art_attack.eps_step == pytest.approx(EPS / 4)
    assert art_attack.norm == np.inf and art_attack.max_iter == 10
    l2 = create_attack("art.pgd", model, ThreatModel("L2", 1.5))
    assert l2.extra["attack_params"]["norm"] == 2
    with pytest.raises(UserError, match="Linf threat models only"):
        create_attack("art.bim", model, ThreatModel("L2", 1.5))
    assert create_attack("art.threshold", model, eps="8/255").extra["attack_params"]["th"] == 8  # 8-bit levels
    assert create_attack("art.autopgd", model, eps=0.1).extra["attack_params"]["eps_step"] == pytest.approx(0.2)


# --------------------------------------------------------------------------- AutoAttack


@pytest.fixture
def no_official_autoattack(monkeypatch):
    """The official ``autoattack`` package made unimportable; no forced choice."""
    monkeypatch.delenv("ADVKIT_AUTOATTACK", raising=False)
    monkeypatch.setitem(sys.modules, "autoattack", None)


def test_aa_subset_runs_via_pyautoattack(setup, no_official_autoattack):
    model, x, y, _ = setup
    attack, x_adv = run("aa", model, x[:32], y[:32], attacks="apgd-ce", n_iter=10)
    assert attack.implementation.startswith("pyautoattack 0.2.0 (fra31 AutoAttack, custom: apgd-ce")
    assert attack.extra["autoattack_implementation"] == "pyautoattack"
    assert attack.extra["autoattack_attacks"] == ["apgd-ce"]
    assert attack.extra["autoattack_version_name"] == "custom"
    assert attack.extra["autoattack_standard"] is False
    wrong = model(x[:32]).argmax(1) != y[:32]
    assert torch.equal(x_adv[wrong], x[:32][wrong])  # AutoAttack only attacks correctly classified points
    assert acc(model, x_adv, y[:32]) < 0.5 * acc(model, x[:32], y[:32])


def test_aa_standard_with_tiny_budgets(setup, no_official_autoattack):
    model, x, y, _ = setup
    attack, _ = run("aa", model, x[:16], y[:16], n_iter=5, n_queries=20, n_target_classes=2)
    assert attack.extra["autoattack_attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    adv = attack.fn.state["attack"]
    assert adv.apgd.n_iter == 5 and adv.apgd.n_iter_2 == 1 and adv.square.n_queries == 20
    assert adv.apgd_targeted.n_target_classes == 2 and adv.fab.n_target_classes == 2


def test_aa_standard_label(setup, no_official_autoattack):
    model, *_ = setup
    attack = create_attack("autoattack", model)
    assert attack.implementation == "pyautoattack 0.2.0 (fra31 AutoAttack, standard: apgd-ce, apgd-t, fab-t, square)"
    assert attack.extra["autoattack_standard"] is True
    assert create_attack("aa", model, attacks="apgd-t+apgd-ce").extra["autoattack_attacks"] == ["apgd-ce", "apgd-t"]
    with pytest.raises(UserError, match="unknown AutoAttack attack"):
        create_attack("aa", model, attacks="apgd-ce,pgd")


def test_aa_rand_uses_the_rand_version(setup, no_official_autoattack):
    model, x, y, _ = setup
    attack, _ = run("aa-rand", model, x[:4], y[:4], n_iter=2)
    assert attack.extra["autoattack_version_name"] == "rand"
    assert attack.extra["autoattack_attacks"] == ["apgd-ce", "apgd-dlr"]
    adv = attack.fn.state["attack"]
    assert adv.version == "rand" and adv.apgd.eot_iter == 20 and adv.apgd.n_restarts == 1


def test_aa_forced_torchattacks_is_labelled_non_standard(setup, monkeypatch):
    monkeypatch.setenv("ADVKIT_AUTOATTACK", "torchattacks")
    model, x, y, _ = setup
    attack, _ = run("aa", model, x[:16], y[:16], attacks="apgd-ce,square", n_iter=5, n_queries=20)
    assert attack.implementation.startswith("torchattacks 3.5.1 AutoAttack (reduced")
    assert "not the standard AutoAttack" in attack.implementation
    assert attack.extra["autoattack_implementation"] == "torchattacks"
    assert attack.extra["autoattack_standard"] is False


def test_aa_forced_implementation_must_be_installed(setup, monkeypatch):
    monkeypatch.setenv("ADVKIT_AUTOATTACK", "autoattack")
    monkeypatch.setitem(sys.modules, "autoattack", None)
    model, *_ = setup
    with pytest.raises(UserError, match="not installed"):
        create_attack("aa", model)
    monkeypatch.setenv("ADVKIT_AUTOATTACK", "foolbox")
    with pytest.raises(UserError, match="use one of"):
        create_attack("aa", model)


def test_single_autoattack_attacks(setup, no_official_autoattack):
    model, x, y, _ = setup
    attack, _ = run("square-aa", model, x[:8], y[:8], n_queries=20)
    assert attack.black_box and attack.extra["autoattack_attacks"] == ["square"]
    attack, _ = run("apgd-t", model, x[:8], y[:8], n_iter=3)
    assert attack.extra["autoattack_attacks"] == ["apgd-t"]
