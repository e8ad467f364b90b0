"""Explainers against independent reference computations written here: the Fréchet distance and FID,
seed 004's inversion distance, class activation maps, and the shared L2 PGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

import advkit
from advkit._internal.errors import UserError
from advkit._internal.explanation.engine import explain
from advkit._internal.models import ImageClassifier

pytestmark = pytest.mark.usefixtures("single_thread")


def frechet_by_scipy(a, b) -> float:
    """The FID formula of Heusel et al. (2017) with scipy's matrix square root."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(ca @ cb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.real(root)))


@pytest.fixture(scope="module")
def model():
    return advkit.load_model("smallcnn-fmnist").eval()


@pytest.fixture(scope="module")
def images(fmnist_test):
    x, y = fmnist_test.tensors()
    return x[:6], y[:6]


# --- the Fréchet distance ----------------------------------------------------------------------


def test_frechet_distance_closed_form_for_gaussians():
    """For N(μ1, diag σ1²) and N(μ2, diag σ2²): d² = ‖μ1 − μ2‖² + Σ (σ1 − σ2)²."""
    from advkit_explainers.frechet import frechet_distance

    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 0.5])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([2.0, 1.0, 0.5, 3.0])
    a = mu1 + s1 * torch.randn(40000, 4, generator=g, dtype=torch.float64)
    b = mu2 + s2 * torch.randn(40000, 4, generator=g, dtype=torch.float64)
    exact = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())  # 5 + 6 = 11
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)


def test_frechet_distance_matches_an_eigen_computation():
    """Non-commuting covariances: tr (Σa Σb)^½ = tr (Σa^½ Σb Σa^½)^½, by numpy's symmetric eigensolver."""
    from advkit_explainers.frechet import frechet_distance

    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 7)) @ rng.normal(size=(7, 7))
    b = rng.normal(size=(250, 7)) @ rng.normal(size=(7, 7)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    ra = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ cb @ ra), 0, None)).sum()
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ref, rel=1e-7)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(frechet_by_scipy(a, b), rel=1e-6)


def test_frechet_distance_with_fewer_vectors_than_features_matches_scipy():
    """The fast path (n < k, singular covariances) against scipy's matrix square root, and both paths agree."""
    from advkit_explainers.frechet import _low_rank, _torch_fidelity, frechet_distance

    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, 40)) @ rng.normal(size=(40, 40))
    b = rng.normal(size=(12, 40)) * 2 + 0.5
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(frechet_by_scipy(a, b), rel=1e-6)
    a, b = torch.randn(60, 20, dtype=torch.float64), torch.randn(50, 20, dtype=torch.float64) * 1.5 + 0.2
    assert _low_rank(a, b) == pytest.approx(_torch_fidelity(a, b), rel=1e-9)


def frechet_by_gram(a, b) -> float:
    """The same distance for n < k in numpy: tr (Σa Σb)^½ = Σ singular values of A Bᵀ (A, B centred / √(n − 1))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ca, cb = (a - a.mean(0)) / np.sqrt(len(a) - 1), (b - b.mean(0)) / np.sqrt(len(b) - 1)
    cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (ca**2).sum() + (cb**2).sum() - 2 * cross)


def test_frechet_distance_refuses_bad_features():
    from advkit_explainers.frechet import frechet_distance

    with pytest.raises(UserError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(UserError, match="NaN or inf"):
        frechet_distance(torch.full((3, 2), float("nan")), torch.zeros(4, 2))


# --- the fid explainer in the model's own features ----------------------------------------------


def test_model_features_are_named_honestly_and_match_the_formula(model, images):
    x, y = images
    with pytest.warns(UserWarning, match="fewer than the 128 features"):
        e = explain(model, x, y, "fid", a="train", b="test", n_ref=40, extractor="model")
    assert "fid" not in e.scores and e.meta["metric"] == "Fréchet distance in the model's own features, not FID"
    # independent: SmallCNN's penultimate features by its own layers, then scipy's formula
    tr, te = (advkit.load_dataset("fmnist-mini", s, n=40).tensors()[0] for s in ("train", "test"))
    with torch.no_grad():
        feats = [model.backbone.head(model.backbone.features((t - model.mean) / model.std)) for t in (tr, te)]
    ref = frechet_by_gram(feats[0].numpy(), feats[1].numpy())  # 40 images < 128 features
    assert e.scores["frechet_distance"].item() == pytest.approx(ref, rel=1e-4)
    assert e.meta["features"] == 128 and "fewer than the 128 features" in e.meta["note"]


# --- FID with the FID Inception ------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """FID Inception-v3 weights with torch-fidelity's layout and random values (the real file is a download).

    torch-fidelity's constructor always loads a file, so the state dict of a freshly initialised one is
    taken with its loading switched off for the construction only.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inc
    from safetensors.torch import save_file

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tf_inc, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tf_inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        torch.manual_seed(0)
        net = tf_inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "inception-random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def reference_features(path, images: torch.Tensor, feature: str) -> torch.Tensor:
    """torch-fidelity's extractor called directly on the uint8 RGB images FID is defined on."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inc
    from safetensors.torch import load_file

    state = load_file(str(path))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tf_inc, "load_state_dict_from_url", lambda *a, **k: state)
        net = tf_inc.FeatureExtractorInceptionV3("inception-v3-compat", [feature])
    u8 = (images.expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
    with torch.no_grad():
        return net(u8)[0].double()


def test_fid_with_the_fid_inception_matches_the_formula(model, images, inception_file):
    x, y = images
    with pytest.warns(UserWarning) as caught:
        e = explain(model, x, y, "fid", a="train", b="test", n_ref=2, weights=str(inception_file))
    assert any("fewer than the 2048 features" in str(w.message) for w in caught)
    assert e.meta["features"] == 2048 and "non-standard" in e.meta["metric"] and e.meta["weights_sha256"]
    tr, te = (advkit.load_dataset("fmnist-mini", s, n=2).tensors()[0] for s in ("train", "test"))
    fa, fb = reference_features(inception_file, tr, "2048"), reference_features(inception_file, te, "2048")
    d = e.scores["fid"].item()
    assert d == pytest.approx(frechet_by_gram(fa.numpy(), fb.numpy()), rel=1e-6)


def test_fid_without_weights_is_one_line(model, images, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    x, y = images
    with pytest.raises(UserError) as err:
        explain(model, x, y, "fid", a="inputs", b="noise")
    msg = str(err.value)
    assert "\n" not in msg and "FID Inception-v3 weights are not on this machine" in msg and "extractor=model" in msg
    with pytest.raises(UserError, match="weights file not found"):
        explain(model, x, y, "fid", a="inputs", b="noise", weights=str(tmp_path / "missing.pth"))


def test_fid_refuses_a_file_of_other_weights(model, images, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(path))
    x, y = images
    with pytest.raises(UserError, match="does not hold FID Inception-v3 weights"):
        explain(model, x, y, "fid", a="inputs", b="noise", weights=str(path))


def test_fid_with_the_standard_weights_when_cached(model, images):
    from advkit_explainers.inception import find_weights

    path = find_weights()
    if path is None:
        pytest.skip("the standard FID Inception weights are a download, not on this machine")
    x, y = images
    e = explain(model, x, y, "fid", a="train", b="test", n_ref=8)
    assert e.meta["metric"] == "FID" and e.scores["fid"].item() > 0


# --- seed 004's l2 distance of inverted features ------------------------------------------------


def test_invert_measures_in_inception_mid_features(model, images, inception_file):
    x, y = images
    e = explain(model, x[:2], y[:2], "invert", iterations=3, weights=str(inception_file))
    assert "192 features" in e.meta["feature_l2"] and "model_l2" not in e.scores
    both = reference_features(inception_file, torch.cat([e.images, x[:2]]), "192")
    ref = (both[:2] - both[2:]).norm(dim=1)
    assert torch.allclose(e.scores["inception_l2"].double(), ref, rtol=1e-4, atol=1e-5)
    # the minimised distance is what it says
    from advkit_explainers.layers import Representation

    rep = Representation(model, x)
    r, t = rep.batched(e.images), rep.batched(x[:2])
    assert torch.allclose(e.scores["distance_end"], (r - t).norm(dim=1) / t.norm(dim=1), atol=1e-5)


def test_invert_without_weights_says_its_measure_is_not_independent(model, images, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    x, y = images
    with pytest.warns(UserWarning, match="not independently as in the paper"):
        e = explain(model, x[:3], y[:3], "invert", iterations=2)
    assert "inception_l2" not in e.scores and "not independent" in e.meta["feature_l2"]
    store = {}
    h = model.backbone.features[8].register_forward_hook(lambda m, a, o: store.setdefault("a", []).append(o.mean((2, 3))))
    with torch.no_grad():
        model(x[:3]), model(e.images)
    h.remove()
    assert torch.allclose(e.scores["model_l2"], (store["a"][1] - store["a"][0]).norm(dim=1), atol=1e-5)
    assert "inception_l2" not in explain(model, x[:2], y[:2], "invert", iterations=1, measure="none").scores


# --- class activation maps against the analytic gradient ----------------------------------------


class GapNet(nn.Module):
    """conv(stride 2) → ReLU → global average pool → linear: ∂y_c/∂A_kij = W[c, k] / (H·W) exactly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("variant", ["gradcam", "xgradcam", "layercam"])
def test_cam_matches_the_analytic_gradient(variant):
    from advkit_explainers.cam import compute_cam

    torch.manual_seed(0)
    net = ImageClassifier(GapNet(), [0.0], [1.0], num_classes=4, input_shape=(1, 16, 16)).eval()
    x, y = torch.rand(3, 1, 16, 16), torch.tensor([0, 2, 3])
    ours = compute_cam(net, x, y, layer="backbone.act", variant=variant)
    with torch.no_grad():
        a = net.backbone.act(net.backbone.conv(x))  # (3, 6, 8, 8)
    grad = net.backbone.fc.weight[y][:, :, None, None].detach() / (a.shape[2] * a.shape[3])  # (3, 6, 1, 1)
    grad = grad.expand_as(a)
    if variant == "gradcam":  # ReLU(Σ_k mean_ij(g_k) A_k)
        low = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    elif variant == "xgradcam":  # ReLU(Σ_k [Σ_ij A g / Σ_ij A] A_k)
        w = (a * grad).sum((2, 3), keepdim=True) / (a.sum((2, 3), keepdim=True) + 1e-7)
        low = F.relu((w * a).sum(1, keepdim=True))
    else:  # LayerCAM: ReLU(Σ_k ReLU(g_kij) A_kij)
        low = F.relu((F.relu(grad) * a).sum(1, keepdim=True))
    ref = F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    assert (low > 0).any() and (grad < 0).any()  # the ReLU on the gradient matters for this net
    assert torch.allclose(ours, ref, atol=1e-6)


# --- the shared L2 PGD --------------------------------------------------------------------------


def test_l2_pgd_reaches_the_projection_of_a_quadratic_minimum():
    """min ‖x − t‖² over ‖x − x0‖ ≤ eps (inside [0, 1]): x* = x0 + eps·(t − x0)/‖t − x0‖."""
    from advkit_explainers.pgd import l2_pgd

    g = torch.Generator().manual_seed(0)
    x0 = 0.4 + 0.2 * torch.rand(2, 1, 4, 4, generator=g)
    t = 0.3 + 0.4 * torch.rand(2, 1, 4, 4, generator=g)
    eps = 0.5 * float((t - x0).flatten(1).norm(dim=1).min())
    out = l2_pgd(x0, lambda x, rows: (x - t[rows]).flatten(1).pow(2).sum(1), iterations=200, eps=eps, step=0.01,
                 maximize=False)
    d = t - x0
    ref = x0 + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(out, ref, atol=0.01)
    assert ((out - x0).flatten(1).norm(dim=1) <= eps + 1e-5).all()


def test_class_gen_scores_are_the_target_logits(model, images):
    x, y = images
    e = explain(model, x[:3], y[:3], "class-gen", iterations=2)
    with torch.no_grad():
        logits = model(e.images)
    assert torch.allclose(e.scores["logit_end"], logits.gather(1, y[:3, None])[:, 0], atol=1e-4)
    assert torch.allclose(e.scores["prob_end"], logits.softmax(1).gather(1, y[:3, None])[:, 0], atol=1e-5)


def test_feature_viz_scores_and_top_images_are_the_features(model, images, fmnist_test):
    x, y = images
    e = explain(model, x[:2], y[:2], "feature-viz", iterations=3, features="5,7+9", pool=200, top=2, start="image")

    def penultimate(t):  # SmallCNN's representation by its own layers
        with torch.no_grad():
            return model.backbone.head(model.backbone.features((t - model.mean) / model.std))

    end = penultimate(e.images)
    assert torch.allclose(e.scores["activation_end"], torch.stack([end[0, 5], end[1, [7, 9]].mean()]), atol=1e-4)
    pool = penultimate(fmnist_test.tensors()[0][:200])
    # compared by value: ReLU features tie at 0, and ties may come in any order
    assert torch.allclose(pool[e.meta["top_indices"][0], 5], pool[:, 5].topk(2).values, atol=1e-5)
    joint = pool[:, [7, 9]].mean(1)
    assert torch.allclose(joint[e.meta["bottom_indices"][1]], -(-joint).topk(2).values, atol=1e-5)
