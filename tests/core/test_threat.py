"""The threat model: eps parsing and the verifier that every adversarial batch goes through."""

import warnings

import pytest
import torch

from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.threat import ThreatModel, parse_eps, parse_norm


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0.031", 0.031), ("2e-2", 0.02), ("0", 0.0)])
def test_parse_eps(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["8/0", "-1", "abc", "nan", "inf"])
def test_bad_eps_is_a_user_error(text):
    with pytest.raises(UserError):
        parse_eps(text)


def test_linf_eps_above_one_warns_about_255_scale():
    with pytest.warns(UserWarning, match="0-255"):
        parse_eps("8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_eps("3.0", "L2")  # L2 budgets above 1 are normal


def test_parse_norm():
    assert parse_norm("linf") == "Linf" and parse_norm("L2") == "L2" and parse_norm("l1") == "L1"
    with pytest.raises(UserError):
        parse_norm("L3")


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(16, 1, 8, 8) * 0.8 + 0.1


@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_points_on_the_sphere_pass_and_outside_fail(x, norm):
    t = ThreatModel(norm, 0.05)
    d = torch.randn_like(x)
    p = {"Linf": float("inf"), "L2": 2, "L1": 1}[norm]
    d = d / d.flatten(1).norm(p=p, dim=1).view(-1, 1, 1, 1) * 0.05
    assert t.check(x, x + d) is None
    v = t.check(x, x + 1.01 * d)
    assert v is not None and v.count == 16 and v.max_excess == pytest.approx(0.0005, rel=0.05)


def test_bounds_nan_and_shape_are_checked(x):
    t = ThreatModel("Linf", 0.1)
    bad = x.clone()
    bad[0, 0, 0, 0] = 1.05
    v = t.check(x, bad)
    assert "bounds" in str(v) and v.count == 1 and v.max_excess == pytest.approx(0.05)
    nan = x.clone()
    nan[3, 0, 1, 1] = float("nan")
    assert "finite" in str(t.check(x, nan))
    assert "shape" in str(t.check(x, x[:4]))


def test_verify_names_the_attack_and_size(x):
    t = ThreatModel("Linf", 8 / 255)
    with pytest.raises(ThreatViolation, match=r"attack 'broken'.*16/16 points exceed Linf"):
        t.verify(x * 0.5, x * 0.5 + 2 * 8 / 255, who="attack 'broken'")


def test_per_pixel_budget(x):
    t = ThreatModel("Linf", 0.1)
    eps_map = torch.full_like(x, 0.02)
    eps_map[..., :4] = 0.1
    ok = x + eps_map * torch.sign(torch.randn_like(x))
    assert t.check(x, ok.clamp(0, 1), eps=eps_map) is None
    bad = x + 0.05
    assert "per-pixel" in str(t.check(x, bad, eps=eps_map))
