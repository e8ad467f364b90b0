"""The training-time defenses: training PGD, PGD-AT, TRADES, MART, label smoothing, mixed batches, LWTA, noise injection."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

import advkit
import advkit.plugin
from advkit._internal.checkpoint import load_checkpoint
from advkit._internal.data import load_dataset
from advkit._internal.defense import Defense, TrainContext, compose, create_defense
from advkit._internal.errors import UserError
from advkit._internal.models import load_model
from advkit._internal.threat import ThreatModel
from advkit._internal.training.optim import build_optimizer
from advkit._internal.training.trainer import train

LINF = ThreatModel.parse("Linf", "0.1")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=64)


@pytest.fixture(scope="module")
def batch(data):
    x, y = data.tensors()
    return x[:16], y[:16]


def smallcnn(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,))


def ctx(threat=LINF, seed=0, **kw):
    return TrainContext(threat=threat, device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed), **kw)


# ----------------------------------------------------------------------------- registry and composition


def test_defenses_are_registered():
    from advkit._internal.plugins import registry

    names = registry("defense").names()
    for name in ("pgd-at", "trades", "mart", "label-smoothing", "mixed", "lwta", "noise-injection"):
        assert name in names


def test_points():
    assert create_defense("pgd-at").points == ("objective",)
    assert create_defense("trades").points == ("objective",)
    assert create_defense("mixed").points == ("adversary",)
    assert create_defense("lwta").points == ("model",)
    assert create_defense("noise-injection").points == ("model",)


@pytest.mark.parametrize("pair,point", [
    (("pgd-at", "trades"), "objective"),
    (("lwta", "noise-injection"), "model"), (("mixed", "mixed:clean=1"), "adversary"),
])
def test_same_point_is_refused(pair, point):
    with pytest.raises(UserError, match=f"both set the {point} point"):
        compose([create_defense(s) for s in pair])


def test_two_model_defenses_refused(data):
    with pytest.raises(UserError, match="model point"):
        train(smallcnn(), data, defenses=["lwta", "noise-injection"], epochs=1, batch_size=32, val_data=None, quiet=True)


@pytest.mark.parametrize("spec,match", [
    ("trades:beta=-1", "beta"), ("pgd-at:steps=-2", "steps"), ("label-smoothing:smoothing=1", "smoothing"),
    ("mixed:mode=sometimes", "mode"), ("mixed:clean=-1", "weight"), ("lwta:U=1", "U"), ("pgd-at:nope=1", "no parameter"),
])
def test_bad_parameters(spec, match):
    with pytest.raises(UserError, match=match):
        create_defense(spec)


# ----------------------------------------------------------------------------- training PGD


@pytest.mark.parametrize("norm,eps", [("Linf", "0.1"), ("L2", "1.0")])
def test_training_pgd_stays_inside_and_raises_the_loss(norm, eps, batch):
    from advkit._internal.adversary import pgd_perturbation as pgd

    model = smallcnn().eval()
    x, y = batch
    threat = ThreatModel.parse(norm, eps)
    x_adv = pgd(model, x, y, norm=threat.norm, eps=threat.eps, steps=5, generator=torch.Generator().manual_seed(0))
    assert threat.check(x, x_adv) is None
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_training_pgd_per_pixel_budget(batch):
    from advkit._internal.adversary import PGDAdversary

    model = smallcnn().eval()
    x, y = batch
    eps_map = torch.zeros_like(x)
    eps_map[..., 7:21, 7:21] = 0.1  # budget only in the centre
    c = ctx()
    c.state["eps_map"] = eps_map
    c.attack_loss = Defense().attack_loss
    x_adv = PGDAdversary(steps=3).perturb(model, x, y, c)
    assert LINF.check(x, x_adv, eps=eps_map) is None
    assert torch.equal(x_adv[..., :7, :], x[..., :7, :])
    assert (x_adv - x).abs().max() > 0.05


def test_training_pgd_maximises_the_given_loss(batch):
    from advkit._internal.adversary import pgd_perturbation as pgd

    model = smallcnn().eval()
    x, y = batch
    trades = create_defense("trades")
    x_adv = pgd(model, x, y, eps=0.1, steps=5, loss_fn=trades.attack_loss, start="normal")
    with torch.no_grad():
        assert trades.attack_loss(model(x_adv), model(x), y) > trades.attack_loss(model(x + 0.001), model(x), y)


def test_training_pgd_computes_clean_logits_only_for_losses_that_read_them(batch):
    from advkit._internal.adversary import pgd_perturbation as pgd

    model = smallcnn().eval()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    x, y = batch
    for spec, expected in (("pgd-at", 3), ("mart", 3), ("trades", 4)):  # 3 steps (+1 clean pass for TRADES' KL)
        calls.clear()
        pgd(model, x, y, eps=0.1, steps=3, loss_fn=create_defense(spec).attack_loss)
        assert len(calls) == expected, spec


# ----------------------------------------------------------------------------- every defense trains


def _fit(data, defenses, epochs=6, seed=0, **kw):
    kw = {"optimizer": "adam", "lr": 2e-3, "schedule": "constant", "augment": False, "batch_size": 32, **kw}
    return train(smallcnn(seed), data, defenses=defenses, epochs=epochs, threat=LINF, quiet=True, seed=seed, **kw)


@pytest.mark.parametrize("spec", [
    (), ("pgd-at:steps=2",), ("trades:steps=2",), ("mart:steps=2",), ("label-smoothing",),
    ("lwta",), ("noise-injection",), ("mixed:clean=0.5,noise=0.5",),
])
def test_defense_trains_and_loss_goes_down(spec, data):
    result = _fit(data, list(spec))
    losses = [h["train_loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    with torch.no_grad():
        assert result.model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_composition_trades_lwta_trains(data):
    result = _fit(data, ["trades:steps=1", "lwta"], epochs=4)
    losses = [h["train_loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.model.stochastic
    assert [r["name"] for r in result.model.info["defenses"]] == ["trades", "lwta"]


def test_objective_gets_adversarial_examples(data, batch):
    seen = {}

    class Spy(Defense):
        needs_adversary = True

        def loss(self, model, x, x_adv, y, ctx):
            seen["delta"] = float((x_adv - x).abs().max())
            return super().loss(model, x, x_adv, y, ctx)

    spy = Spy()
    spy.name = "spy"
    _fit(data, [spy], epochs=1)
    assert 0.05 < seen["delta"] <= 0.1 + 1e-6


def test_trades_and_mart_losses_are_finite_and_reduce_to_ce(batch):
    model = smallcnn().train()
    x, y = batch
    ce = F.cross_entropy(model(x), y)
    assert torch.allclose(create_defense("trades").loss(model, x, x, y, ctx()), ce, atol=1e-5)  # KL(p||p) = 0
    mart = create_defense("mart").loss(model, x, x + 0.05 * torch.rand_like(x), y, ctx())
    assert torch.isfinite(mart) and mart > 0


# ----------------------------------------------------------------------------- label smoothing (a modifier)


def smoothed_ce(logits, y, s):
    """Cross-entropy against (1 - s) one-hot + s / K, written out (independent of torch's label_smoothing)."""
    k = logits.shape[1]
    target = torch.full_like(logits, s / k)
    target[torch.arange(len(y)), y] += 1 - s
    return -(target * torch.log_softmax(logits, 1)).sum(1).mean()


def reference_loss(name, model, x, x_adv, y, s, beta=6.0):
    """PGD-AT, TRADES and MART written from the papers' formulas, the CE terms with smoothed labels."""
    la, lc = model(x_adv), model(x)
    if name == "pgd-at":
        return smoothed_ce(la, y, s)
    p, q = torch.softmax(lc, 1), torch.softmax(la, 1)
    kl = (p * (p.add(1e-12).log() - q.add(1e-12).log())).sum(1)
    if name == "trades":
        return smoothed_ce(lc, y, s) + beta * kl.mean()
    rows = []
    for i in range(len(y)):  # MART's boosted CE, one example at a time
        others = [q[i, j] for j in range(q.shape[1]) if j != int(y[i])]
        rows.append(-torch.log(1.0001 - max(others) + 1e-12))
    boost = torch.stack(rows).mean()
    weight = 1.0000001 - p[torch.arange(len(y)), y]
    return smoothed_ce(la, y, s) + boost + beta * (kl * weight).mean()


@pytest.mark.parametrize("objective", ["pgd-at", "trades", "mart"])
@pytest.mark.parametrize("s", [0.0, 0.2])
def test_label_smoothing_composes_with_each_objective(objective, s, batch, data):
    model = smallcnn().eval()
    x, y = batch
    x_adv = (x + 0.05 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    defenses = [create_defense(objective)] + ([create_defense(f"label-smoothing:smoothing={s}")] if s else [])
    owner = compose(defenses)
    assert create_defense("label-smoothing").points == () and owner["objective"] is defenses[0]
    c = ctx()
    for d in defenses:
        d.setup(model, data, c)
    assert c.label_smoothing == s
    got = defenses[0].loss(model, x, x_adv, y, c)
    assert torch.allclose(got, reference_loss(objective, model, x, x_adv, y, s), rtol=1e-5, atol=1e-6)


def test_label_smoothing_trains_with_pgd_at_and_alone(data, batch):
    both = _fit(data, ["pgd-at:steps=1", "label-smoothing:smoothing=0.3"], epochs=1)
    plain = _fit(data, ["pgd-at:steps=1"], epochs=1)
    assert [r["name"] for r in both.model.info["defenses"]] == ["pgd-at", "label-smoothing"]
    assert both.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"])
    model = smallcnn().eval()
    c = ctx()
    create_defense("label-smoothing:smoothing=0.2").setup(model, data, c)
    x, y = batch
    assert torch.allclose(Defense().loss(model, x, None, y, c), smoothed_ce(model(x), y, 0.2), atol=1e-6)


def test_label_smoothing_refused_where_it_cannot_act(data):
    class HardCE(Defense):
        name = "hard-ce"

        def loss(self, model, x, x_adv, y, ctx):
            return F.cross_entropy(model(x), y)

    with pytest.raises(UserError, match="'hard-ce' does not apply label smoothing"):
        _fit(data, [HardCE(), "label-smoothing"], epochs=1)
    with pytest.raises(UserError, match="label smoothing is set twice"):
        _fit(data, ["label-smoothing", "label-smoothing:smoothing=0.2"], epochs=1)


# ----------------------------------------------------------------------------- mixed batches


def _shift_attack_plugin():
    """A tiny attack plugin: moves every pixel by +eps/2 (so its examples are recognisable)."""

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        def shift(model, threat, scale: float = 0.5):
            return lambda x, y: (x + scale * threat.eps).clamp(0, 1)

        register("test-shift", shift)

    return types.SimpleNamespace(advkit_register_attacks=advkit_register_attacks, __name__="test_shift_plugin")


@pytest.fixture(scope="module")
def shift_attack():
    from advkit._internal.plugins import register_plugin

    register_plugin(_shift_attack_plugin())
    return "test-shift"


def test_mixed_split_proportions(shift_attack, batch):
    from advkit_training.mixed import split_counts

    model = smallcnn().eval()
    x, y = batch
    x = x.clamp(0.2, 0.8)  # so that the shift is never clipped
    mixed = create_defense(f"mixed:clean=0.5,noise=0.25,{shift_attack}=0.25")
    mixed.setup(model, None, ctx())
    c = ctx()
    x_adv = mixed.perturb(model, x, y, c)
    info = c.state["mixed"]
    counts = torch.bincount(info["source"], minlength=3).tolist()
    assert info["names"] == ["clean", "noise", shift_attack]
    assert counts == split_counts([0.5, 0.25, 0.25], 16) == [8, 4, 4]
    src = info["source"]
    assert torch.equal(x_adv[src == 0], x[src == 0])
    assert torch.allclose(x_adv[src == 2], x[src == 2] + 0.05, atol=1e-6)
    assert LINF.check(x, x_adv) is None
    # shuffled within the batch, differently from batch to batch
    other = ctx(seed=1)
    mixed.perturb(model, x, y, other)
    assert not torch.equal(other.state["mixed"]["source"], src)


def test_mixed_split_rounding():
    from advkit_training.mixed import split_counts

    assert split_counts([0.5, 0.25, 0.25], 10) == [5, 3, 2]
    assert sum(split_counts([1 / 3] * 3, 100)) == 100


def test_mixed_draw_picks_one_source_per_batch(batch):
    model = smallcnn().eval()
    x, y = batch
    mixed = create_defense("mixed:mode=draw,clean=0.5,noise=0.5")
    g = torch.Generator().manual_seed(0)
    picks = []
    for _ in range(200):
        c = TrainContext(threat=LINF, device=torch.device("cpu"), generator=g)
        mixed.perturb(model, x, y, c)
        src = c.state["mixed"]["source"]
        assert src.unique().numel() == 1
        picks.append(int(src[0]))
    assert 0.4 < sum(picks) / len(picks) < 0.6


def test_mixed_defaults_and_unknown_attack(batch):
    mixed = create_defense("mixed")
    assert mixed.names == ["clean", "fgsm", "pgd"] and mixed.weights == [0.5, 0.25, 0.25]
    again = create_defense("mixed", **create_defense("mixed:mode=draw,noise=1,pgd=3,pgd.steps=2").recipe()["params"])
    assert again.mode == "draw" and again.names == ["noise", "pgd"] and again.options == {"pgd": {"steps": 2}}
    bad = create_defense("mixed:clean=0.5,no-such-attack=0.5")
    with pytest.raises(UserError, match="unknown attack"):
        bad.setup(smallcnn(), None, ctx())


def test_mixed_with_registered_attacks(batch):
    from advkit._internal.plugins import registry

    if not {"fgsm", "pgd"} <= set(registry("attack").names()):
        pytest.skip("fgsm/pgd attacks are not registered here")
    model = smallcnn().eval()
    x, y = batch
    mixed = create_defense("mixed:clean=0.5,fgsm=0.25,pgd=0.25,pgd.steps=2")
    mixed.setup(model, None, ctx())
    c = ctx()
    x_adv = mixed.perturb(model, x, y, c)
    assert LINF.check(x, x_adv) is None
    assert torch.bincount(c.state["mixed"]["source"]).tolist() == [8, 4, 4]


# ----------------------------------------------------------------------------- LWTA


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (8, 10)])
def test_lwta_one_winner_per_block(training, shape):
    from advkit_lwta.block import LWTA

    block = LWTA(U=2).train(training)
    x = torch.randn(*shape, requires_grad=True)
    out = block(x)
    blocks = out.reshape(shape[0], shape[1] // 2, 2, *shape[2:])
    assert ((blocks != 0).sum(dim=2) == 1).all()
    kept = blocks.sum(dim=2)  # the winner's value passes unchanged
    xin = x.detach().reshape(shape[0], shape[1] // 2, 2, *shape[2:])
    assert ((kept.unsqueeze(2) == xin).any(dim=2)).all()
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lwta_samples_from_softmax_and_deterministic_takes_argmax():
    from advkit_lwta.block import LWTA

    x = torch.tensor([[1.0, 0.0]]).repeat(20000, 1)
    p = (LWTA(2)(x)[:, 0] != 0).float().mean()
    assert abs(p - torch.softmax(torch.tensor([1.0, 0.0]), 0)[0]) < 0.02
    x = torch.randn(32, 12)
    out = LWTA(3, deterministic=True)(x).reshape(32, 4, 3)
    assert torch.equal(out.sum(2), x.reshape(32, 4, 3).max(2).values)


def test_lwta_channels_not_divisible():
    from advkit_lwta.block import LWTA

    with pytest.raises(UserError, match="pad=true"):
        LWTA(4)(torch.randn(2, 6))
    assert LWTA(4, pad=True)(torch.randn(2, 6)).shape == (2, 6)
    with pytest.raises(UserError, match="U=3"):
        train(smallcnn(), load_dataset("fmnist-mini", "train", n=8), defenses=["lwta:U=3"], epochs=1, quiet=True)


def test_lwta_replaces_every_activation_module():
    from torch import nn

    from advkit_lwta.block import LWTA

    model = smallcnn()
    n_relu = sum(isinstance(m, nn.ReLU) for m in model.modules())
    create_defense("lwta").transform_model(model.backbone)
    assert sum(isinstance(m, LWTA) for m in model.modules()) == n_relu == 5
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_lwta_on_a_timm_backbone():
    timm = pytest.importorskip("timm")
    from advkit_lwta.block import LWTA

    net = timm.create_model("resnet10t", num_classes=10, in_chans=3)
    create_defense("lwta").transform_model(net)
    assert sum(isinstance(m, LWTA) for m in net.modules()) > 0
    with torch.no_grad():
        assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_lwta_checkpoint_reloads_as_stochastic(tmp_path, data):
    result = _fit(data, ["lwta"], epochs=1, out=tmp_path)
    model = load_checkpoint(tmp_path / "best.safetensors")
    assert model.stochastic and model.info["defenses"][0]["name"] == "lwta"
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # sampled winners at test time too


# ----------------------------------------------------------------------------- noise injection


def test_noise_injection_is_random_in_eval_and_alpha_learns(batch):
    model = smallcnn()
    create_defense("noise-injection").transform_model(model.backbone)
    x, y = batch
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
    model.train()
    F.cross_entropy(model(x), y).backward()
    alphas = [p for n, p in model.named_parameters() if n.endswith("alpha")]
    assert len(alphas) == 6  # 4 convolutions, 2 linear layers
    assert all(float(a.detach()) == 0.25 for a in alphas)
    assert all(a.grad is not None and a.grad.abs() > 0 for a in alphas)


def test_noise_injection_alpha_is_not_decayed():
    model = smallcnn()
    create_defense("noise-injection:per_channel=true").transform_model(model.backbone)
    alphas = {id(p) for n, p in model.named_parameters() if n.endswith("alpha")}
    assert [p.shape[0] for n, p in model.named_parameters() if n.endswith("alpha")][0] == 32
    opt = build_optimizer(model, "sgd", 0.1, 0.9, 5e-4)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert alphas == plain and not (alphas & decayed)


def test_noise_injection_checkpoint_reloads(tmp_path, data):
    _fit(data, ["noise-injection"], epochs=1, out=tmp_path)
    model = load_checkpoint(tmp_path / "last.safetensors")
    assert model.stochastic
    assert any(n.endswith("alpha") for n, _ in model.named_parameters())


# ----------------------------------------------------------------------------- minimum-norm attacks in mixed batches


@pytest.fixture(scope="module")
def halfnorm():
    """A minimum-norm test attack: leaves labels 0-4 in place (inside any ball), moves 5-9 by 3 eps (outside)."""
    from advkit._internal.plugins import register_plugin

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        def factory(model, threat):
            def attack(x, y):
                far = (x + 3 * threat.eps).clamp(0, 1)
                return torch.where((y >= 5).view(-1, 1, 1, 1), far, x)

            return attack

        register("halfnorm", factory, minimum_norm=True)

    register_plugin(types.SimpleNamespace(advkit_register_attacks=advkit_register_attacks, __name__="test_halfnorm"))
    return "halfnorm"


def test_mixed_reports_what_each_minimum_norm_attack_kept(halfnorm, data, capsys):
    result = train(smallcnn(), data, defenses=["mixed:halfnorm=1"], epochs=2, batch_size=32, threat=LINF,
                   optimizer="adam", lr=1e-3, augment=False, quiet=False, val_attack="none")
    y = data.tensors()[1]
    kept, total = int((y < 5).sum()), len(y)
    assert 0 < kept < total
    line = f"mixed: halfnorm kept {kept}/{total} examples inside {LINF} (the others trained as clean)"
    assert [h["notes"] for h in result.history] == [[line], [line]]
    printed = capsys.readouterr().out.splitlines()
    assert printed.count(f"  {line}") == 2
    first = printed.index(f"  {line}")
    assert printed[first - 1].startswith("epoch 1/2")  # the note follows its epoch's line
