"""Registries: lookup, aliases, qualified names, parameters and did-you-mean errors."""

import pytest

from advkit._internal.errors import UserError
from advkit._internal.registry import Entry, Registry, bind_params, introspect, parse_options, parse_spec
from advkit._internal.values import parse_number


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
    assert parse_spec("hf-hub:org/net") == ("hf-hub:org/net", {})  # a prefixed name, no parameters
    assert parse_spec("pkg.mod:factory:width=4") == ("pkg.mod:factory", {"width": "4"})
    assert parse_spec("smallcnn:mean=0.1,0.2,0.3") == ("smallcnn", {"mean": "0.1,0.2,0.3"})
    with pytest.raises(UserError, match="key=value, got 'fgsm'"):
        parse_spec("mixed:clean=0.5,fgsm")
    with pytest.raises(UserError, match="given twice"):
        parse_spec("pgd:steps=1,steps=2")


def test_listing_filters_by_wildcard_pattern():
    """``list_components(kind, pattern)`` keeps what shell wildcards match in a name, alias or qualified name."""
    import fnmatch

    from advkit._internal.listing import list_components
    from advkit._internal.plugins import registry

    def expected(kind, pattern):
        return sorted(e.name for e in registry(kind)
                      if any(fnmatch.fnmatchcase(n.lower(), pattern) for n in (e.name, e.qualified, *e.aliases)))

    got = sorted(e["name"] for e in list_components("backbones", "*resnet*")["backbones"])
    assert got == expected("backbone", "*resnet*") and "resnet18-cifar" in got and "smallcnn" not in got
    got = sorted(e["name"] for e in list_components("attacks", "TA.*")["attacks"])
    assert got == expected("attack", "ta.*") and len(got) > 10 and all(n.startswith("ta.") for n in got)
    assert [e["name"] for e in list_components("attacks", "pgd-linf")["attacks"]] == ["pgd"]  # an alias matches
    assert list_components("datasets", "nothing*") == {"datasets": []}
    assert [p["name"] for p in list_components("plugins", "model?")["plugins"]] == ["models"]


def test_list_command_with_a_pattern():
    from click.testing import CliRunner

    from advkit._internal.cli import cli

    def run(*args):
        r = CliRunner().invoke(cli, ["list", *args])
        return r.exit_code, r.stdout, r.stderr

    code, out, _ = run("backbones", "*resnet*")
    assert code == 0 and out.startswith("backbones (2)\n") and "resnet18-cifar" in out and "smallcnn" not in out
    code, out, _ = run("*square*")  # a lone pattern searches every kind; empty kinds are left out
    assert code == 0 and out.startswith("attacks (") and "backbones" not in out and "square" in out
    code, out, _ = run("attack", "fgsm", "--json")  # singular kinds work too
    assert code == 0 and [a["name"] for a in __import__("json").loads(out)["attacks"]] == ["fgsm"]
    code, _, err = run("atacks")
    assert code == 2 and "unknown kind 'atacks'; did you mean 'attacks'?" in err
    code, _, err = run("zzz*")
    assert code == 2 and "nothing registered matches 'zzz*'" in err
