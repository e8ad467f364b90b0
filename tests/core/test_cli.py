"""The command line: listing, and one clear line with exit code 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from advkit._internal.cli import cli


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version_and_help():
    code, out, _ = run("--version")
    assert code == 0 and "advkit, version" in out
    code, out, _ = run("--help")
    assert code == 0 and all(c in out for c in ("eval", "train", "explain", "list"))


def test_list_shows_builtin_plugins_with_parameters():
    code, out, _ = run("list", "--json")
    listing = json.loads(out)
    attacks = {a["name"]: a for a in listing["attacks"]}
    assert {"pgd", "cw", "fgsm"} <= set(attacks)
    steps = {p["name"]: p.get("default") for p in attacks["pgd"]["params"]}["steps"]
    assert steps == 10 and attacks["pgd"]["provider"] == "torchattacks"
    assert {"smallcnn", "resnet18-cifar", "wrn-34-10", "timm"} <= {b["name"] for b in listing["backbones"]}
    assert {"fmnist-mini", "cifar10", "cifar100", "svhn", "mnist", "fashion-mnist", "imagefolder"} <= {d["name"] for d in listing["datasets"]}
    names = {p["name"] for p in listing["plugins"]}
    assert {"models", "datasets", "torchattacks", "art"} <= names
    code, out, _ = run("list", "backbones")
    assert code == 0 and "params: num_classes=10, in_chans=1, width=128" in out
    assert "[default architecture; trains with optimizer adam, lr 0.002" in out
    assert {b["name"]: b for b in listing["backbones"]}["smallcnn"]["capabilities"]["trains_with"]["optimizer"] == "adam"
    code, out, _ = run("list", "attacks")
    suite = {ln.split()[0]: int(ln.split("[default suite #")[1][0]) for ln in out.splitlines() if "[default suite #" in ln}
    assert suite == {"pgd": 1, "cw": 2, "aa": 3} and "validation]" in next(ln for ln in out.splitlines() if ln.split()[:1] == ["pgd"])


def one_line_error(args, pattern):
    code, out, err = run(*args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert __import__("re").search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["eval", "--attacks", "pgdd"], r"unknown attack 'pgdd'; did you mean 'pgd'"),
        (["eval", "--model", "smalcnn"], r"unknown backbone 'smalcnn'; did you mean 'smallcnn'"),
        (["eval", "--dataset", "fmnist-mnii"], r"unknown dataset.*did you mean 'fmnist-mini'"),
        (["eval", "--eps", "8/0"], r"eps '8/0' is not a number"),
        (["eval", "--eps", "-1"], r"must be a finite number >= 0"),
        (["eval", "--eps", "abc"], r"eps 'abc' is not a number"),
        (["eval", "--norm", "L3"], r"unknown norm 'L3'"),
        (["eval", "--model", "missing/model.safetensors"], r"checkpoint file not found"),
        (["eval", "--attack-opt", "pgd.stepz=3", "--attacks", "pgd"], r"no parameter 'stepz'; did you mean 'steps'"),
        (["eval", "--attack-opt", "cw.steps=3", "--attacks", "pgd"], r"not among --attacks"),
        (["eval", "--n", "0"], r"-n must be positive"),
        (["eval", "--dataset", "cifar10", "--data-dir", "/nonexistent"], r"cifar10 \(test\) not found under /nonexistent"),
        (["train", "--defense", "no-such-defense"], r"unknown defense 'no-such-defense'"),
        (["explain", "--method", "no-such-method"], r"unknown explainer 'no-such-method'"),
    ],
)
def test_user_errors_are_one_line(args, pattern):
    one_line_error(args, pattern)


def test_explain_into_an_unwritable_out_is_one_line_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(["explain", "--method", "gradcam", "-n", "2", "--out", str(tmp_path / "file" / "ex")],
                   r"cannot write to --out .*file/ex: Not a directory")


def test_linf_eps_above_one_warns(tmp_path):
    code, out, err = run("--quiet", "eval", "--eps", "8", "--attacks", "fgsm", "--n", "8", "--model", "smallcnn")
    assert code == 0, err
    assert "0-255" in err and "did you mean 8/255" in err


def test_unknown_command_suggests():
    code, _, err = run("evl")
    assert code == 2 and "did you mean 'eval'" in err


def test_debug_shows_the_traceback():
    result = subprocess.run([sys.executable, "-m", "advkit", "--debug", "eval", "--eps", "abc"], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr
