"""Registries: lookup, aliases, qualified names, parameters and did-you-mean errors."""

import pytest

from advkit.errors import UserError
from advkit.registry import Entry, Registry, bind_params, introspect, parse_number, parse_options, parse_spec


def factory(model, threat, steps: int = 10, alpha: float | None = None, random_start: bool = True):
    """A test attack."""


def make_registry():
    reg = Registry("attack")
    reg.add(Entry("attack", "pgd", factory, "torchattacks", aliases=("pgd-linf",), params=introspect(factory)))
    reg.add(Entry("attack", "pgd", factory, "art", params=introspect(factory)))
    reg.add(Entry("attack", "fgsm", factory, "torchattacks", params=introspect(factory)))
    return reg


def test_lookup_is_case_insensitive_with_aliases_and_qualified_names():
    reg = make_registry()
    assert reg.get("PGD").provider == "torchattacks"  # first registration wins the bare name
    assert reg.get("pgd-LINF").name == "pgd"
    assert reg.get("art.pgd").provider == "art"
    assert reg.get("torchattacks.fgsm").name == "fgsm"
    assert "Pgd" in reg and "nope" not in reg


def test_unknown_name_suggests_closest():
    with pytest.raises(UserError, match=r"did you mean 'pgd'"):
        make_registry().get("pgdd")


def test_introspection_skips_engine_arguments():
    names = [p.name for p in introspect(factory)]
    assert names == ["steps", "alpha", "random_start"]
    assert introspect(factory)[0].default == 10


def test_bind_params_converts_strings_by_default_type():
    entry = make_registry().get("pgd")
    bound = bind_params(entry, {"steps": "20", "alpha": "2/255", "random-start": "false"})
    assert bound == {"steps": 20, "alpha": pytest.approx(2 / 255), "random_start": False}
    with pytest.raises(UserError, match="has no parameter 'step'.*did you mean 'steps'"):
        bind_params(entry, {"step": "3"})
    with pytest.raises(UserError, match="expected an integer"):
        bind_params(entry, {"steps": "many"})


def test_parsers():
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert parse_number("2e-2") == pytest.approx(0.02)
    assert parse_number("10") == 10
    with pytest.raises(ValueError):
        parse_number("8/0")
    assert parse_options(["pgd.steps=20", "art.pgd.eps_step=0.01"]) == {"pgd": {"steps": "20"}, "art.pgd": {"eps_step": "0.01"}}
    with pytest.raises(UserError):
        parse_options(["steps=20"])
    assert parse_spec("mixed:clean=0.5,fgsm=0.25") == ("mixed", {"clean": "0.5", "fgsm": "0.25"})
    with pytest.raises(UserError):
        parse_spec("mixed:clean")
