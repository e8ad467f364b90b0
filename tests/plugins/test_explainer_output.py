"""``output=logit|probability`` of the ``ig`` and ``shap`` explainers, checked against softmax computed here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advkit
from advkit.plugin import UserError, create_explainer, registry


@pytest.fixture(scope="module")
def smooth():
    """A small smooth (tanh) classifier with spread-out probabilities: quadrature on its softmax converges fast."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        net[3].weight.mul_(8)
    return net


@pytest.fixture(scope="module")
def batch(fmnist_test):
    x, y = fmnist_test.tensors()
    return x[:4], y[:4]


def probs(model, x, y):
    """softmax(model(x)) per image: (N, classes), and the probability of each image's own label."""
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    return p, p.gather(1, y[:, None])[:, 0]


def logits(model, x, y):
    with torch.no_grad():
        return model(x).gather(1, y[:, None])[:, 0]


def test_output_is_a_parameter_defaulting_to_logit():
    for name in ("ig", "shap"):
        params = {p.name: p for p in registry("explainer").get(name).params}
        assert params["output"].default == "logit", name


@pytest.mark.parametrize("method", ["gausslegendre", "trapezoid"])
def test_ig_probability_is_complete_on_the_softmax(smooth, batch, method):
    x, y = batch
    e = advkit.explain(smooth, x, y, "ig", steps=32, method=method, output="probability")
    _, p = probs(smooth, x, y)
    _, p0 = probs(smooth, torch.zeros_like(x), y)  # the black baseline
    assert (p - p0).abs().min() > 0.01
    total = e.maps.flatten(1).sum(1)
    assert torch.allclose(total, p - p0, atol=1e-4)  # Σ IG = softmax(f(x))[c] − softmax(f(x'))[c]
    assert torch.allclose(e.scores["gap"], total - (p - p0), atol=1e-6)
    assert torch.allclose(e.scores["probability"], p, atol=1e-6)
    assert torch.allclose(e.scores["baseline_probability"], p0, atol=1e-6)
    assert set(e.scores) == {"gap", "probability", "baseline_probability"}
    assert e.meta["output"] == "probability"


def test_ig_logit_default_is_unchanged_and_differs_from_probability(smooth, batch):
    x, y = batch
    e = advkit.explain(smooth, x, y, "ig", steps=32, method="gausslegendre")
    prob = advkit.explain(smooth, x, y, "ig", steps=32, method="gausslegendre", output="probability")
    df = logits(smooth, x, y) - logits(smooth, torch.zeros_like(x), y)
    assert torch.allclose(e.maps.flatten(1).sum(1), df, atol=1e-4)
    assert set(e.scores) == {"gap", "logit", "baseline_logit"} and e.meta["output"] == "logit"
    assert torch.allclose(e.scores["logit"], logits(smooth, x, y), atol=1e-6)
    assert (e.maps - prob.maps).abs().max() > 0.1 * e.maps.abs().max()
    cos = nn.functional.cosine_similarity(e.maps.flatten(1), prob.maps.flatten(1))
    assert (cos < 0.999).all()  # not merely rescaled


def test_shap_probability_efficiency(smooth, batch):
    """Expected gradients: Σ φ = softmax(f(x))[c] − E softmax(f(x'))[c] in expectation over (x', α)."""
    x, y = batch
    p_all, p = probs(smooth, x, y)
    # One baseline, one of the batch: only α is random, so efficiency holds closely against that image.
    one = advkit.explain(smooth, x, y, "shap", samples=2000, n_baselines=1, dataset="batch", output="probability")
    total = one.maps.flatten(1).sum(1)
    fits = [b for b in range(x.shape[0]) if torch.allclose(total, p - p_all[b, y], atol=3e-3)]
    assert len(fits) == 1, (total, p[:, None] - p_all[:, y].T)
    # All four images as baselines: against their mean probability, and the gap is that difference.
    e = advkit.explain(smooth, x, y, "shap", samples=4000, n_baselines=4, dataset="batch", output="probability")
    expected = p_all[:, y].mean(0)  # mean over baselines x_j of softmax(f(x_j))[y_i]
    total = e.maps.flatten(1).sum(1)
    assert ((p - expected).abs() > 0.04).all()
    assert torch.allclose(total, p - expected, atol=0.015)
    assert torch.allclose(e.scores["gap"], total - (p - expected), atol=1e-6)
    assert torch.allclose(e.scores["probability"], p, atol=1e-6)
    assert set(e.scores) == {"gap", "probability"} and e.meta["output"] == "probability"
    logit = advkit.explain(smooth, x, y, "shap", samples=200, n_baselines=4, dataset="batch")
    assert set(logit.scores) == {"gap", "logit"} and logit.meta["output"] == "logit"
    assert (logit.maps.flatten(1).sum(1) - total).abs().min() > 0.05


@pytest.mark.parametrize("name", ["ig", "shap"])
def test_a_misspelt_output_is_refused(name, smooth, batch):
    with pytest.raises(UserError, match="probability") as err:
        create_explainer(name, output="probabilty")
    assert f"{name}.output" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="probability"):
        advkit.explain(smooth, *batch, f"{name}:output=probabilty")
    assert create_explainer(name, output=" Probability ") is not None  # case and spaces as for other choices
