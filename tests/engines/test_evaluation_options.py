"""``--attacks NAME:key=value,...``: one option syntax, with ``--attack-opt NAME.key=value`` kept as an alias."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from advkit._internal.cli import cli
from advkit._internal.errors import UserError
from advkit._internal.grammar import merged, parse_list, parse_options


def parse_attack_list(text):
    items = parse_list(text)
    return [n for n, _ in items], {n.lower(): p for n, p in items if p}


def merged_options(spec_opts, attack_opts):
    return merged(spec_opts, parse_options(attack_opts))


@pytest.mark.parametrize("text, names, opts", [
    ("pgd,cw,aa", ["pgd", "cw", "aa"], {}),
    ("pgd:steps=20,alpha=0.01,aa", ["pgd", "aa"], {"pgd": {"steps": "20", "alpha": "0.01"}}),
    ("fgsm, PGD:steps=3 ,cw:c=2,kappa=0", ["fgsm", "PGD", "cw"], {"pgd": {"steps": "3"}, "cw": {"c": "2", "kappa": "0"}}),
    ("aa:attacks=apgd-ce", ["aa"], {"aa": {"attacks": "apgd-ce"}}),
])
def test_attack_list_syntax(text, names, opts):
    assert parse_attack_list(text) == (names, opts)


@pytest.mark.parametrize("text, message", [
    ("steps=20,pgd", r"'steps=20' belongs to no name \(write NAME:steps=20\)"),
    ("pgd,:steps=2", r"':steps=2' names nothing"),
    ("pgd:steps=2,steps=3", r"parameter 'steps' is given twice"),
])
def test_attack_list_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_attack_list(text)


def test_attack_opt_is_an_alias():
    assert merged_options({"pgd": {"steps": "20"}}, ["pgd.alpha=0.01", "cw.c=2"]) == {
        "pgd": {"steps": "20", "alpha": "0.01"}, "cw": {"c": "2"}}
    assert merged_options({"pgd": {"steps": "20"}}, ["pgd.steps=20"]) == {"pgd": {"steps": "20"}}
    with pytest.raises(UserError, match=r"pgd.steps is given twice with different values \(20 and 5\)"):
        merged_options({"pgd": {"steps": "20"}}, ["pgd.steps=5"])


def _report(tmp_path, *args):
    r = CliRunner().invoke(cli, ["-q", "eval", "-n", "8", "--eps", "0.1", *args, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.stderr
    return json.loads((tmp_path / "report.json").read_text())


def test_both_forms_reach_the_attack(tmp_path):
    new = _report(tmp_path / "new", "--attacks", "pgd:steps=3,alpha=0.02,fgsm")
    old = _report(tmp_path / "old", "--attacks", "pgd,fgsm", "--attack-opt", "pgd.steps=3", "--attack-opt", "pgd.alpha=0.02")
    for rep in (new, old):
        assert [a["name"] for a in rep["attacks"]] == ["pgd", "fgsm"]
        assert rep["attacks"][0]["params"]["steps"] == 3 and rep["attacks"][0]["params"]["alpha"] == 0.02
    assert new["robust_accuracy"] == old["robust_accuracy"]


def test_bad_parameter_in_the_list_is_one_line():
    r = CliRunner().invoke(cli, ["-q", "eval", "-n", "8", "--attacks", "pgd:steps=-3"])
    assert r.exit_code == 2 and r.stderr.startswith("advkit: error:") and "steps" in r.stderr


def test_auto_batch_size_on_a_cpu_is_the_measured_fastest():
    """A model whose time per call is 4 ms plus 0.05 ms per image up to 64 images and 0.2 ms per image beyond:
    64 images per call is the fastest (64 / 7.2 ms); the smaller ones pay the 4 ms more often."""
    import time

    import torch

    from advkit._internal.cost import best_cpu_batch

    class Timed(torch.nn.Module):
        input_shape = (1, 2, 2)

        def forward(self, x):
            n, t0 = x.shape[0], time.perf_counter()
            while time.perf_counter() - t0 < 0.004 + (0.00005 if n <= 64 else 0.0002) * n:
                pass  # busy: sleep() overshoots by milliseconds on a loaded machine
            return x.flatten(1) * 1.0

    size, rates = best_cpu_batch(Timed(), (1, 2, 2), candidates=(16, 32, 64, 128))
    assert size == 64, rates
    assert max(rates, key=rates.get) == 64


def test_auto_batch_size(monkeypatch):
    """auto on a GPU: half the largest power of two whose forward+backward fits."""
    import torch

    from advkit._internal.cost import largest_batch
    from advkit._internal.evaluation.resolve import batch_size_of

    class Limited(torch.nn.Module):  # runs out of memory above 300 images
        input_shape = (1, 4, 4)

        def forward(self, x):
            if x.shape[0] > 300:
                raise torch.cuda.OutOfMemoryError("out of memory")
            return x.flatten(1).sum(1, keepdim=True)

    assert largest_batch(Limited(), (1, 4, 4), "cpu") == 128  # 256 fits, 512 does not
    assert batch_size_of("64", Limited(), "cpu", True) == 64
    with pytest.raises(UserError, match="whole number or auto"):
        batch_size_of("big", Limited(), "cpu", True)
    with pytest.raises(UserError, match="must be positive, got 0"):
        batch_size_of(0, Limited(), "cpu", True)
