"""PART: the budget map, masks kept by dataset index, the schedule, the adversary and the part-map explainer."""

from __future__ import annotations

import copy
import functools
import json
import warnings

import numpy as np
import pytest
import torch

from advkit._internal.data import load_dataset
from advkit._internal.defense import create_defense
from advkit._internal.errors import UserError
from advkit._internal.models import load_model
from advkit._internal.threat import ThreatModel
from advkit._internal.training.batching import apply_augmentation
from advkit._internal.training.trainer import train
from advkit_part.budget import budget_map, important, low_budget, zscore
from advkit_part.cam import cam_maps
from advkit_part.defense import PART, default_warmup

LINF = ThreatModel.parse("Linf", "0.1")
EPS, LOW = 0.1, 0.1 * 7 / 8


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=64)


def pretrained():
    """A trained SmallCNN, so that the class activation maps mean something."""
    return load_model("smallcnn-fmnist")


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("smallcnn:width=16", num_classes=10, input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,))


class Spy(PART):
    """PART recording, at every step, what it attacked with which budget (and the masks of every epoch)."""

    def __init__(self, **params):
        super().__init__(**params)
        self.name = "part"
        self.steps_seen: list[dict] = []
        self.banks: dict[int, torch.Tensor] = {}
        self.models: dict[int, torch.nn.Module] = {}

    def on_epoch_start(self, model, data, ctx):
        super().on_epoch_start(model, data, ctx)
        self.models[ctx.epoch] = copy.deepcopy(model)  # the weights the masks were computed with
        if self.bank.high is not None:
            self.banks[ctx.epoch] = self.bank.high.clone()

    def perturb(self, model, x, y, ctx):
        g = torch.Generator(device=ctx.generator.device)
        g.set_state(ctx.generator.get_state())
        x_adv = super().perturb(model, x, y, ctx)
        self.steps_seen.append({
            "epoch": ctx.epoch, "index": ctx.index.clone(), "x": x.clone(), "y": y.clone(), "x_adv": x_adv.clone(),
            "eps_map": ctx.state.get("eps_map"), "augmentation": ctx.state.get("augmentation"), "generator": g,
            "model": copy.deepcopy(model) if self.source == "batch" else None,
        })
        return x_adv


def fit(model, data, defenses, epochs=1, augment=False, **kw):
    kw = {"optimizer": "adam", "lr": 1e-3, "schedule": "constant", "batch_size": 16, "val_attack": "none", **kw}
    return train(model, data, defenses=defenses, epochs=epochs, threat=LINF, augment=augment, quiet=True, **kw)


# ----------------------------------------------------------------------------- the budget map


def test_budget_map_holds_eps_on_high_cam_pixels_and_eps_low_elsewhere():
    torch.manual_seed(0)
    cam = torch.rand(3, 1, 12, 12)
    cam[0, 0, 2:5, 2:5] += 3.0  # a hot spot
    cam[2] = 0.0  # Grad-CAM's ReLU can leave nothing
    high = important(cam, threshold=1.0)
    m = budget_map(high, EPS, LOW)
    assert m.shape == (3, 1, 12, 12)
    assert set(torch.unique(m).tolist()) == {torch.tensor(EPS).item(), torch.tensor(LOW).item()}
    flat = cam[:2].flatten(1).numpy()
    z = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)
    assert np.array_equal(high[:2].flatten(1).numpy(), z > 1.0)  # z-score over each image's pixels
    assert (m[0, 0, 2:5, 2:5] == EPS).all()  # the hot spot keeps eps
    assert (m[:2].flatten(1).gather(1, cam[:2].flatten(1).argmin(1, keepdim=True)) == LOW).all()  # the coldest pixel does not
    assert (m[2] == EPS).all()  # a flat map says nothing: full eps, as plain adversarial training
    assert torch.allclose(zscore(cam[:2]).flatten(1).std(1, unbiased=False), torch.ones(2))
    # the maps of a trained model, in eval mode with frozen weights (its mode restored, no parameter gradient)
    model, x = pretrained().train(), load_dataset("fmnist-mini", "test", n=8).tensors()[0]
    maps = cam_maps(model, x, torch.zeros(8, dtype=torch.long), "backbone.features.8", "gradcam", "pred",
                    batch_size=3)
    assert model.training and all(p.requires_grad for p in model.parameters())
    m = budget_map(important(maps), EPS, LOW)
    frac = (m == EPS).float().flatten(1).mean(1)
    assert ((frac > 0.03) & (frac < 0.5)).all()  # a minority of important pixels, as in the paper
    assert not any(p.grad is not None for p in model.parameters())


def test_low_budget_options():
    assert low_budget(8 / 255) == pytest.approx(7 / 255)
    assert low_budget(8 / 255, eps_low=6 / 255) == pytest.approx(6 / 255)
    assert low_budget(0.1, ratio=0.5) == pytest.approx(0.05)
    d = create_defense("part:eps_low=7/255")
    assert d.params["eps_low"] == pytest.approx(7 / 255)
    assert default_warmup(5) == 1 and default_warmup(100) == 20 and default_warmup(2) == 1 and default_warmup(1) == 0


@pytest.mark.parametrize("spec,match", [
    ("part:threshold=nan", "threshold"), ("part:threshold=high", "threshold: expected a number"),
    ("part:cam=gradcm", "did you mean 'gradcam'"), ("part:target=truth", "target"), ("part:ratio=2", "ratio"),
    ("part:eps_low=-1", "eps_low"), ("part:eps_low=0.05,ratio=0.5", "not both"), ("part:every=0", "every"),
    ("part:maps=batch,every=2", "every"), ("part:warmup=-1", "warmup"), ("part:maps=sometimes", "maps"),
])
def test_bad_parameters(spec, match):
    with pytest.raises(UserError, match=match) as err:
        create_defense(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec,threat,match", [
    ("part:layer=features.9x", LINF, r"part.layer: .*did you mean 'backbone.features.\d'"),
    ("part:eps_low=0.2", LINF, "exceeds"),
    ("part", ThreatModel.parse("L2", "1.0"), "Linf"),
])
def test_errors_at_setup(data, spec, threat, match):
    with pytest.raises(UserError, match=match) as err:
        train(tiny(), data, defenses=["pgd-at:steps=1", spec], epochs=1, threat=threat, val_attack="none", quiet=True)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- masks and their images


def test_masks_stay_with_their_images_under_shuffling(data):
    part = Spy(warmup=0)
    fit(pretrained(), data, ["pgd-at:steps=1", part], epochs=2)
    X, Y = data.tensors()
    assert len(part.steps_seen) == 8 and set(part.banks) == {0, 1}
    orders = [torch.cat([s["index"] for s in part.steps_seen if s["epoch"] == e]) for e in (0, 1)]
    assert not torch.equal(orders[0], torch.arange(64)) and not torch.equal(orders[0], orders[1])  # shuffled
    agree_own, agree_positional = [], []
    for k, s in enumerate(part.steps_seen):
        idx, bank, then = s["index"], part.banks[s["epoch"]], part.models[s["epoch"]]
        assert torch.equal(s["x"], X[idx])  # no augmentation here: the batch is the dataset's images
        assert torch.equal(s["eps_map"], budget_map(bank[idx], EPS, LOW))  # each image gets the mask of its index
        # ... and that mask is the one computed for that image, with the weights of the epoch start
        own = important(cam_maps(then, X[idx], Y[idx], part.layer_path, "gradcam", "pred"))
        agree_own.append((own == bank[idx]).float().mean())
        # the reference reads the masks by batch position, after computing them in another order
        start = (k % 4) * 16
        agree_positional.append((own == bank[start:start + 16]).float().mean())
    assert min(agree_own) > 0.999
    assert float(torch.stack(agree_positional).mean()) < 0.95


def test_masks_follow_the_crop_of_their_batch(data):
    part = Spy(warmup=0)
    fit(pretrained(), data, ["pgd-at:steps=1", part], epochs=1, augment=True)
    X, _ = data.tensors()
    moved = 0
    for s in part.steps_seen:
        aug, idx, bank = s["augmentation"], s["index"], part.banks[0]
        assert aug is not None and torch.equal(aug(X[idx]), s["x"])  # the engine's crop of this batch
        assert torch.equal(s["eps_map"], budget_map(aug(bank[idx].float()) > 0.5, EPS, LOW))
        moved += int((s["eps_map"] != budget_map(bank[idx], EPS, LOW)).flatten(1).any(1).sum())
    assert moved > 32  # most images were shifted, and their masks with them


def test_mask_crop_and_flip():
    from advkit_part.masks import MaskBank

    high = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    high[:, :, 1:3, 0:2] = True  # top-left corner
    bank = MaskBank(high, epoch=3)
    same = functools.partial(apply_augmentation, pad=2, oy=torch.tensor([2, 2, 0]), ox=torch.tensor([2, 2, 0]),
                             fl=torch.tensor([False, True, False]))
    out = bank.for_batch(torch.tensor([0, 1, 2]), same)
    assert torch.equal(out[0], high[0])  # no shift, no flip
    assert torch.equal(out[1], high[1].flip(-1))  # flipped with its image
    assert torch.equal(out[2, :, 2:, 2:], high[2, :, :6, :6]) and not out[2, :, :2].any()  # shifted; padding is eps_low
    state = bank.state_dict()
    again = MaskBank()
    again.load_state_dict(state)
    assert torch.equal(again.high, high) and again.epoch == bank.epoch


# ----------------------------------------------------------------------------- the adversary and the schedule


@pytest.mark.parametrize("objective", ["pgd-at:steps=2", "trades:steps=5", "mart:steps=5"])
def test_every_perturbation_respects_its_own_budget(data, objective):
    part = Spy(warmup=0)
    result = fit(pretrained(), data, [objective, part], epochs=1)
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    assert [r["name"] for r in result.model.info["defenses"]][-2:] == [objective.split(":")[0], "part"]
    for s in part.steps_seen:
        m, delta = s["eps_map"], (s["x_adv"] - s["x"]).abs()
        assert m is not None and m.shape == (16, 1, 28, 28)
        assert LINF.check(s["x"], s["x_adv"], eps=m) is None  # the verifier, per pixel
        assert LINF.check(s["x"], s["x_adv"], eps=torch.full_like(m, LOW)) is not None  # eps_low alone is exceeded
        low = (m == LOW).expand_as(delta)
        assert delta[low].max() <= LOW + 1e-6 and delta[~low].max() > LOW + 1e-3


def test_warmup_is_plain_adversarial_training(data):
    from advkit._internal.adversary import pgd_perturbation as pgd

    part = Spy(warmup=1)
    fit(pretrained(), data, ["pgd-at:steps=2", part], epochs=2)
    assert set(part.banks) == {1}  # no masks before the warm-up ends
    later = part.banks[1]
    for k, s in enumerate(part.steps_seen):
        warm = s["epoch"] == 0
        assert (s["eps_map"] is None) == warm
        if k in (0, 4):  # the first step of an epoch runs on the epoch-start weights: redo its PGD
            eps = LINF.eps if warm else s["eps_map"]
            again = pgd(part.models[s["epoch"]].eval(), s["x"], s["y"], eps=eps, steps=2, step_size=LINF.eps / 4,
                        generator=s["generator"])
            assert torch.equal(again, s["x_adv"])
        past = (s["x_adv"] - s["x"]).abs() > LOW + 1e-3
        if warm:  # uniform eps: pixels go past eps_low whatever their importance
            assert past.float().mean() > 0.1 and (past & ~later[s["index"]]).any()
        else:
            assert not (past & (s["eps_map"] == LOW)).any()


def test_mask_schedule():
    p = PART(warmup=1, every=2)
    p.bank.high = None
    assert not p.due(0) and p.due(1)
    p.bank.high = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    assert [p.due(e) for e in range(1, 6)] == [True, False, True, False, True]
    assert not PART(maps="batch", warmup=0).due(3)


def test_pgd_settings_come_from_the_objective(data):
    """The engine hands PART the objective's own adversary settings through ctx.adversary."""
    from advkit._internal.adversary import PGDSettings

    seen = {}

    class Probe(PART):
        def setup(self, model, data, ctx):
            seen[self.params.get("tag")] = ctx.adversary
            raise RuntimeError("stop")

    for objective, expected in (("trades:steps=7", PGDSettings(7, None, "normal", 0.001)),
                                ("pgd-at:steps=3,step_size=0.01", PGDSettings(3, 0.01, "uniform", 0.001)),
                                (None, PGDSettings())):  # PART alone: the default training PGD
        probe = Probe()
        probe.params["tag"] = objective
        with pytest.raises(RuntimeError, match="stop"):
            fit(tiny(), data, [objective, probe] if objective else [probe], epochs=1)
        assert seen[objective] == expected, objective


def test_maps_of_the_attacked_batch(data):
    part = Spy(warmup=0, maps="batch")
    fit(pretrained(), data, ["pgd-at:steps=1", part], epochs=1, augment=True)
    assert part.bank.high is None and part.state_dict() == {}
    for s in part.steps_seen:
        then = s["model"]  # the weights of that step
        own = important(cam_maps(then, s["x"], s["y"], part.layer_path, "gradcam", "pred"))
        assert torch.equal(s["eps_map"], budget_map(own, EPS, LOW))


def test_part_with_csa(data, tmp_path):
    part = Spy(warmup=0)
    result = fit(tiny(), data, ["pgd-at:steps=1", "csa:alpha=0.5,grid=2,per_class=2,permutations=2", part],
                 epochs=1, augment=True, out=tmp_path)
    assert [r["name"] for r in result.model.info["defenses"]] == ["pgd-at", "csa", "part"]
    assert np.isfinite(result.history[0]["train_loss"])
    X, _ = data.tensors()
    for s in part.steps_seen:  # CSA owns the data point: PART attacks its images, with the masks of their indices
        assert not torch.allclose(s["x"], s["augmentation"](X[s["index"]]))
        assert torch.equal(s["eps_map"], budget_map(s["augmentation"](part.banks[0][s["index"]].float()) > 0.5, EPS, LOW))
        assert LINF.check(s["x"], s["x_adv"], eps=s["eps_map"]) is None


# ----------------------------------------------------------------------------- command line and explainer


def test_cli_train_then_part_map(tmp_path, capsys):
    from advkit._internal.checkpoint import load_tensors
    from advkit._internal.cli import main

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "--seed", "0", "train", "--model", "smallcnn:width=16", "--n-train", "64", "--epochs", "2",
              "--batch-size", "32", "--optimizer", "adam", "--lr", "1e-3", "--eps", "0.1", "--n-val", "16",
              "--val-attack", "none", "--defense", "pgd-at:steps=1", "--defense", "part", "--out", str(run)])
    assert exit_.value.code == 0
    assert "defenses: pgd-at, part" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(np.isfinite(json.loads(x)["train_loss"]) for x in lines)
    masks = load_tensors(run / "train_state.safetensors")["defense.1.masks"]  # kept for --resume
    assert masks.dtype == torch.bool and masks.shape == (64, 1, 28, 28)

    out = tmp_path / "explain"
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "explain", "--method", "part-map", "--model", str(run / "last.safetensors"), "-n", "4",
              "--out", str(out)])
    assert exit_.value.code == 0
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    arrays = np.load(out / "explanation.npz")
    assert arrays["images"].shape == (4, 1, 28, 28) and set(np.unique(arrays["images"])) <= {0.0, 1.0}
    meta = json.loads((out / "summary.json").read_text())["models"][0]["meta"]
    assert meta["from_checkpoint"] and meta["eps"] == pytest.approx(0.1) and meta["eps_low"] == pytest.approx(LOW)
    assert meta["layer"] == "backbone.features.8"

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["list", "explainers"])
    assert "part-map" in capsys.readouterr().out


def test_warns_when_the_adversary_cannot_pass_eps_low(data):
    from advkit._internal.defense import TrainContext

    model = tiny()
    for objective, inert in (("trades:steps=3", True), ("trades:steps=5", False), ("pgd-at:steps=1", False)):
        obj = create_defense(objective)
        ctx = TrainContext(threat=LINF, device=torch.device("cpu"), epochs=5, attack_loss=obj.attack_loss,
                           adversary=obj.default_adversary().settings)
        part = create_defense("part")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            part.setup(model, data, ctx)
        assert any("no effect" in str(w.message) for w in caught) == inert, objective
        assert part.warmup == 1  # 20% of 5 epochs
