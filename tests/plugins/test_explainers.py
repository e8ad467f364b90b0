"""The built-in explainers on real data: attributions, CAMs, representation methods, FID and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import advkit
from advkit._internal.cli import cli
from advkit._internal.errors import UserError
from advkit._internal.explanation.engine import explain
from advkit._internal.models import ImageClassifier, load_model


@pytest.fixture(scope="module")
def model():
    return advkit.load_model("smallcnn-fmnist").eval()


@pytest.fixture(scope="module")
def batch(fmnist_test):
    x, y = fmnist_test.tensors()
    return x[:4], y[:4]


@pytest.fixture(scope="module")
def linear():
    """A linear classifier: every path integral is exact, so attributions have closed forms."""
    torch.manual_seed(0)
    return ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), [0.5], [0.5], num_classes=10, input_shape=(1, 28, 28)).eval()


def test_registered_with_defaults():
    from advkit._internal.plugins import registry

    reg = registry("explainer")
    for name in ("ig", "shap", "gradcam", "feature-viz", "invert", "class-gen", "fid"):
        entry = reg.get(name)
        assert entry.params and all(not p.required for p in entry.params), name


# --- integrated gradients and SHAP -------------------------------------------------------------


def test_ig_completeness(model, batch):
    x, y = batch
    e = explain(model, x, y, "ig", steps=64, method="trapezoid")
    assert e.maps.shape == x.shape
    df = e.scores["logit"] - e.scores["baseline_logit"]
    total = e.maps.flatten(1).sum(1)
    assert torch.allclose(e.scores["gap"], total - df, atol=1e-3)  # the score is what it says
    assert (df.abs() > 1).all()
    assert ((total - df).abs() <= 0.015 * df.abs()).all()  # Σ attributions ≈ f(x) − f(0)
    # captum's riemann_trapezoid (the paper's eq. 11) weights its n points by 1/n: short by ≈ Δf/n.
    lit = explain(model, x, y, "ig", steps=64, method="riemann_trapezoid")
    assert torch.allclose(lit.maps * 64 / 63, e.maps, atol=1e-5)
    assert ((lit.scores["gap"] + df / 64).abs() <= 0.015 * df.abs()).all()


def test_ig_is_exact_on_a_linear_model(linear, batch):
    x, y = batch
    for baseline in ("black", "blurred", "noise"):
        torch.manual_seed(0)
        e = explain(linear, x, y, "ig", steps=4, baseline=baseline)
        torch.manual_seed(0)
        from advkit_explainers.ig import make_baseline

        base = make_baseline(x, baseline)
        assert base.shape == x.shape and 0 <= base.min() and base.max() <= 1
        w = linear.backbone[1].weight[y].view_as(x) / 0.5
        assert torch.allclose(e.maps, w * (x - base), atol=1e-5)
        assert e.scores["gap"].abs().max() < 1e-3


def test_shap_expected_gradients(model, linear, batch):
    x, y = batch
    e = explain(model, x, y, "shap", samples=16, n_baselines=20)
    assert e.maps.shape == x.shape and torch.isfinite(e.maps).all()
    assert e.meta["dataset"] == "fmnist-mini"
    # With one baseline x', a linear model's expected gradients are exactly w·(x − x').
    torch.manual_seed(1)
    one = explain(linear, x, y, "shap", samples=8, n_baselines=1)
    assert one.scores["gap"].abs().max() < 1e-3
    own = explain(model, x, y, "shap", samples=8, n_baselines=4, dataset="batch")
    assert own.meta["dataset"] == "batch"


# --- class activation maps ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["gradcam", "xgradcam", "layercam"])
def test_cam_variants(model, batch, variant):
    x, y = batch
    e = explain(model, x, y, "gradcam", variant=variant)
    assert e.maps.shape == (4, 1, 28, 28)
    assert (e.maps >= 0).all() and (e.maps.flatten(1).amax(1) > 0).all()
    assert e.meta["layer"] == "backbone.features.8"


def test_compute_cam_is_batched_and_takes_names(model, fmnist_test):
    from advkit_explainers.cam import compute_cam

    x, y = fmnist_test.tensors()
    x, y = x[:10], y[:10]
    whole = compute_cam(model, x, y, batch_size=10)
    parts = compute_cam(model, x, y, layer="features.8", batch_size=3)
    assert torch.allclose(whole, parts, atol=1e-5)
    normed = compute_cam(model, x, y, layer="backbone.features.8", variant="layercam", normalize=True)
    assert torch.allclose(normed.flatten(1).amax(1), torch.ones(10))
    with pytest.raises(UserError, match="no layer 'features.80'"):
        compute_cam(model, x, y, layer="features.80")


def test_xgradcam_formula(model, batch):
    """XGradCAM = ReLU(Σ_k w_k A_k) with w_k = Σ A·∂y/∂A / Σ A, checked at layer resolution."""
    from advkit_explainers.cam import _activations_and_grads, _own_cam

    x, y = batch
    layer = model.backbone.features[8]
    a, g = _activations_and_grads(model, layer, x, y)
    w = [[(a[n, k] * g[n, k]).sum() / (a[n, k].sum() + 1e-7) for k in range(a.shape[1])] for n in range(a.shape[0])]
    ref = torch.relu(torch.stack([sum(w[n][k] * a[n, k] for k in range(a.shape[1])) for n in range(a.shape[0])]))
    assert torch.allclose(_own_cam(model, layer, x, y, "xgradcam")[:, 0], ref, atol=1e-4)


@pytest.mark.parametrize(
    "spec, shape, layer",
    [("smallcnn", (1, 28, 28), "backbone.features.8"), ("resnet18-cifar:width=8", (3, 32, 32), "backbone.layer4"),
     ("timm/resnet10t", (3, 64, 64), "backbone.layer4")],
)
def test_cam_layer_found(spec, shape, layer):
    from advkit_explainers.cam import compute_cam
    from advkit_explainers.layers import Representation, cam_layer

    torch.manual_seed(0)
    m = load_model(spec, num_classes=10, input_shape=shape)
    x = torch.rand(2, *shape)
    assert cam_layer(m, x)[0] == layer
    maps = compute_cam(m, x, torch.tensor([1, 2]))
    assert maps.shape == (2, 1, *shape[1:]) and (maps >= 0).all()
    assert Representation(m, x).description.startswith("input of backbone.fc")


# --- representation methods --------------------------------------------------------------------


def test_invert_lowers_feature_distance(model, batch):
    x, y = batch
    e = explain(model, x, y, "invert", iterations=12)
    assert e.images.shape == x.shape and 0 <= e.images.min() and e.images.max() <= 1
    assert (e.scores["distance_end"] < 0.7 * e.scores["distance_start"]).all()
    assert e.extras["source"].shape == x.shape
    from advkit_explainers.invert import next_other_class

    assert (y[next_other_class(y)] != y).all()


def test_class_gen_raises_target_logit(model, batch):
    x, y = batch
    e = explain(model, x, y, "class-gen", iterations=8)
    assert e.images.shape == x.shape and e.inputs.shape == x.shape
    assert 0 <= e.images.min() and e.images.max() <= 1
    assert (e.scores["logit_end"] > e.scores["logit_start"] + 1).all()
    assert e.meta["classes"] == y.tolist()
    e = explain(model, x, y, "class-gen", iterations=2, classes="0,9", per_class=2)
    assert e.meta["classes"] == [0, 0, 9, 9] and e.images.shape[0] == 4


def test_shrunk_normal_samples_its_covariance():
    from advkit_explainers.mvn import ShrunkNormal

    torch.manual_seed(0)
    imgs = torch.rand(30, 1, 3, 3) * torch.linspace(0.2, 1, 9).view(1, 1, 3, 3)
    dist = ShrunkNormal(imgs, shrinkage=0.2)
    cov = dist.covariance()
    assert torch.linalg.eigvalsh(cov).min() > 0
    s = dist.sample(40000).flatten(1).double()
    assert torch.allclose(s.mean(0), dist.mean, atol=0.01)
    assert torch.allclose(torch.cov(s.T), cov, atol=0.004)


def test_feature_viz(model, batch, fmnist_test):
    from advkit_explainers.layers import Representation

    x, y = batch
    pool = fmnist_test.tensors()[0][:300]
    alive = (Representation(model, x).batched(pool).std(0) > 1e-6).nonzero()[:, 0].tolist()
    a, b, c = alive[:3]
    e = explain(model, x, y, "feature-viz", iterations=8, features=f"{a},{b}+{c}", pool=300, top=2)
    assert e.images.shape == (2, 1, 28, 28) and e.meta["features"] == [[a], [b, c]]
    assert (e.scores["activation_end"] > e.scores["activation_start"]).all()
    assert (e.scores["activation_end"] > 0.5 * e.scores["activation_top"]).all()
    assert set(e.extras) == {"top 1", "top 2", "bottom 1", "bottom 2"}
    r = Representation(model, x).batched(torch.cat([e.extras["top 1"], e.extras["bottom 1"]]))
    assert r[0, a] >= r[2, a] and r[1, [b, c]].mean() >= r[3, [b, c]].mean()
    e = explain(model, x, y, "feature-viz", iterations=2, start="image", pool=100)
    assert e.images.shape == x.shape and torch.equal(e.inputs, x)


# --- Fréchet distance --------------------------------------------------------------------------


def test_frechet_distance_matches_scipy():
    from scipy import linalg

    from advkit_explainers.frechet import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g, dtype=torch.float64)
    b = torch.randn(150, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 1
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_fid_grows_with_noise(model, fmnist_test):
    from advkit_explainers.frechet import frechet_distance
    from advkit_explainers.layers import Representation

    x, _ = fmnist_test.tensors()
    x = x[:150]
    rep = Representation(model, x)
    feats = rep.batched(x)
    assert frechet_distance(feats, feats) < 1e-3
    torch.manual_seed(0)
    noise = torch.randn_like(x)
    d = [frechet_distance(feats, rep.batched((x + s * noise).clamp(0, 1))) for s in (0.05, 0.15, 0.4)]
    assert all(u < v for u, v in zip(d, d[1:])) and d[0] > 0


def test_fid_explainer(model, batch, tmp_path, monkeypatch):
    x, y = batch
    e = explain(model, x, y, "fid", a="train", b="test", n_ref=100, extractor="model")
    assert e.scores["frechet_distance"].shape == (1,) and e.meta["n_a"] == 100 and e.meta["frechet_distance"] > 0
    assert e.meta["frechet_distance"] == pytest.approx(float(e.scores["frechet_distance"][0]))
    assert "not FID" in e.meta["metric"] and "fid" not in e.scores
    g = explain(model, x, y, "fid", iterations=2, extractor="smallcnn:width=16", b="inputs")
    assert g.images.shape == x.shape and g.meta["features"] == 16
    assert g.meta["metric"] == "Fréchet distance in the features of smallcnn:width=16, not FID"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # no cached FID weights
    with pytest.raises(UserError, match="weights=FILE"):
        explain(model, x, y, "fid", a="inputs", b="noise")
    with pytest.raises(UserError, match="layer= applies to model extractors"):
        explain(model, x, y, "fid", a="inputs", b="noise", layer="fc")


def test_reference_dataset_must_match(model, batch):
    x, y = batch
    with pytest.raises(UserError, match="dataset=NAME"):
        explain(model, torch.rand(2, 3, 32, 32), y[:2], "class-gen", iterations=1)


# --- command line ------------------------------------------------------------------------------


def test_cli_ig_with_compare(tmp_path):
    out = tmp_path / "ig"
    r = CliRunner().invoke(cli, ["explain", "--method", "ig", "--n", "4", "--compare", "smallcnn", "--opt", "steps=8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for f in ("figure.png", "explanation.npz", "summary.json"):
        assert (out / f).stat().st_size > 0
    arrays = np.load(out / "explanation.npz")
    assert arrays["maps"].shape == (4, 1, 28, 28) and arrays["compare_maps"].shape == (4, 1, 28, 28)
    summary = json.loads((out / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["smallcnn-fmnist", "smallcnn"]
    assert len(summary["models"][0]["scores"]["gap"]) == 4


def test_cli_feature_viz_writes_extras(tmp_path):
    out = tmp_path / "fv"
    r = CliRunner().invoke(cli, ["explain", "--method", "feature-viz", "--n", "3", "--opt", "iterations=2",
                                 "--opt", "pool=200", "--opt", "top=1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    arrays = np.load(out / "explanation.npz")
    assert arrays["images"].shape == (3, 1, 28, 28) and arrays["extra_top 1"].shape == (3, 1, 28, 28)
    assert (out / "figure.png").stat().st_size > 0


def test_cli_bad_option_is_one_line():
    r = CliRunner().invoke(cli, ["explain", "--method", "ig", "--n", "2", "--opt", "baseline=grey"])
    assert r.exit_code == 2 and "ig.baseline must be one of black, blurred, noise" in r.output


def test_cli_misspelt_choice_names_the_closest():
    r = CliRunner().invoke(cli, ["explain", "--method", "ig", "--n", "2", "--opt", "output=probabilty"])
    assert r.exit_code == 2 and "did you mean 'probability'?" in r.output and "Traceback" not in r.output
