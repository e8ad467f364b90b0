"""One option syntax, NAME:key=value, for attacks, defenses, explainers and models; the old forms still work."""

from __future__ import annotations

import json

from click.testing import CliRunner

from advkit._internal.cli import cli


def run(*args):
    r = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def attack_params(out):
    return {a["name"]: a["params"] for a in json.loads((out / "report.json").read_text())["attacks"]}


def test_attacks_take_name_key_value_and_the_old_option(tmp_path):
    run("eval", "-a", "fgsm,pgd:steps=2,alpha=0.01", "-n", "6", "--out", str(tmp_path / "a"))
    assert attack_params(tmp_path / "a")["pgd"] == {"steps": 2, "alpha": 0.01}
    run("eval", "-a", "fgsm,pgd", "--attack-opt", "pgd.steps=2", "--attack-opt", "pgd.alpha=0.01", "-n", "6",
        "--out", str(tmp_path / "b"))
    assert attack_params(tmp_path / "b")["pgd"] == {"steps": 2, "alpha": 0.01}


def test_models_and_defenses_take_name_key_value(tmp_path):
    out = tmp_path / "t"
    run("train", "--model", "smallcnn:width=16", "--defense", "pgd-at:steps=1,step_size=0.05", "--epochs", "1",
        "--n-train", "64", "--n-val", "0", "--batch-size", "32", "--out", str(out))
    side = json.loads((out / "last.json").read_text())
    assert side["arch"] == "smallcnn" and side["arch_params"] == {"width": 16}
    assert side["defenses"][0]["name"] == "pgd-at"
    assert side["defenses"][0]["params"]["steps"] == 1 and side["defenses"][0]["params"]["step_size"] == 0.05


def test_explainers_take_name_key_value_and_the_old_option(tmp_path):
    run("explain", "--method", "ig:steps=4", "-n", "2", "--out", str(tmp_path / "a"))
    run("explain", "--method", "ig", "--opt", "steps=4", "-n", "2", "--out", str(tmp_path / "b"))
    for d in ("a", "b"):
        summary = json.loads((tmp_path / d / "summary.json").read_text())
        assert summary["method"] == "ig" and str(summary["params"]["steps"]) == "4"
