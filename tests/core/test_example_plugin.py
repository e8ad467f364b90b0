"""The example third-party plugin, installed with pip, used through the CLI for all seven hooks.

It is installed into a private folder (``pip install --target``) from a copy of
``examples/advkit-plugin-example``, so the shared environment never sees it; the
folder goes on ``sys.path``, where ``importlib.metadata`` finds its dist-info and
entry point like those of any installed distribution.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advkit._internal import plugins
from advkit._internal.cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "advkit-plugin-example"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example, pip-installed into a private site folder."""
    tmp = tmp_path_factory.mktemp("example")
    src, target = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target", str(target), str(src)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    assert (target / "advkit_plugin_example-0.2.0.dist-info" / "entry_points.txt").is_file()
    return target


def _reload_plugins(commands_before=None):
    plugins.reset()
    for name in [m for m in sys.modules if m == "advkit_example" or m.startswith("advkit_example.")]:
        del sys.modules[name]
    if commands_before is not None:
        cli.commands.clear()
        cli.commands.update(commands_before)
    plugins.load_plugins()


@pytest.fixture(scope="module")
def installed(site):
    """advkit with the example plugin loaded from its entry point (undone afterwards)."""
    before = dict(cli.commands)
    sys.path.insert(0, str(site))
    _reload_plugins()
    plugins.register_commands(cli)
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        _reload_plugins(before)


def run(*args):
    r = CliRunner().invoke(cli, ["--device", "cpu", "-q", *args])
    return r.exit_code, r.stdout, r.stderr


def test_listing_shows_all_seven_hooks(installed):
    code, out, err = run("list", "--json")
    assert code == 0, err
    listing = json.loads(out)
    plugin = {p["name"]: p for p in listing["plugins"]}["example"]
    assert plugin["package"] == "advkit-plugin-example" and plugin["version"] == "0.2.0" and not plugin.get("error")
    mine = {kind: {e["name"] for e in entries if e.get("provider") == "example"}
            for kind, entries in listing.items() if kind != "plugins"}
    assert mine == {"attacks": {"noise"}, "defenses": {"gaussian-augment"}, "explainers": {"saliency"},
                    "backbones": {"tinynet"}, "datasets": {"bars"}, "checks": {"constant-outputs"}}
    code, out, _ = run("--help")
    assert code == 0 and "example-info" in out
    code, out, err = run("example-info")
    assert code == 0, err
    assert "advkit-plugin-example 0.2.0 (device cpu, seed 0)" in out
    assert "backbones: tinynet" in out and "datasets: bars" in out and "defenses: gaussian-augment" in out


def test_dataset_and_backbone_from_the_api(installed):
    import advkit

    data = advkit.load_dataset("bars", "test", n=8)
    x, y = data.tensors()
    assert x.shape == (8, 1, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and data.info.classes[1] == "vertical"
    model = advkit.load_model("tinynet:width=4", dataset=data)
    assert model.num_classes == 4 and model.input_shape == (1, 16, 16)
    assert model.info["normalization"] == {"mean": [pytest.approx(0.2)], "std": [pytest.approx(0.29)], "source": "dataset"}
    assert torch.allclose(model(x), model.backbone((x - 0.2) / 0.29), atol=1e-6)


def test_train_eval_explain_with_the_plugin(installed, tmp_path):
    run_dir = tmp_path / "train"
    code, out, err = run("train", "--model", "tinynet", "--dataset", "bars", "--defense", "gaussian-augment:sigma=0.2",
                         "--epochs", "1", "--n-train", "256", "--n-val", "64", "--val-attack", "noise",
                         "--batch-size", "64", "--lr", "0.05", "--out", str(run_dir))
    assert code == 0, err
    assert "trained tinynet on bars" in out and "defenses: gaussian-augment" in out
    meta = json.loads((run_dir / "last.json").read_text())
    assert meta["arch"] == "tinynet" and meta["metrics"]["val_attack"] == "noise"
    assert "gaussian-augment: 256 images noised (sigma 0.2)" in meta["metrics"]["notes"]
    provided = meta["plugins"]
    assert {k: provided["backbone"][k] for k in ("name", "package", "version")} == \
        {"name": "tinynet", "package": "advkit-plugin-example", "version": "0.2.0"}
    assert [(d["name"], d["package"]) for d in provided["defenses"]] == [("gaussian-augment", "advkit-plugin-example")]

    ckpt = str(run_dir / "last.safetensors")
    code, out, err = run("eval", "--model", ckpt, "--dataset", "bars", "--attacks", "noise,fgsm", "-n", "40",
                         "--audit", "constant-outputs,probability-outputs", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert [a["name"] for a in rep["attacks"]] == ["noise", "fgsm"]
    assert rep["attacks"][0]["implementation"] == "advkit-plugin-example 0.2.0 noise"
    assert rep["attacks"][0]["package"] == "advkit-plugin-example" and rep["attacks"][0]["black_box"] is True
    assert rep["robust_accuracy"] <= rep["clean_accuracy"]
    checks = {c["check"]: c for c in rep["audit"]}
    assert set(checks) == {"constant-outputs", "probability-outputs"}  # a third-party check beside a built-in one
    assert checks["constant-outputs"]["passed"] and "random points of their ball" in checks["constant-outputs"]["detail"]

    code, out, err = run("explain", "--method", "saliency", "--model", ckpt, "--dataset", "bars", "-n", "4",
                         "--out", str(tmp_path / "ex"))
    assert code == 0, err
    maps = np.load(tmp_path / "ex" / "explanation.npz")["maps"]
    assert maps.shape == (4, 1, 16, 16) and (maps >= 0).all() and maps.max() > 0


def test_checkpoint_without_the_plugin_names_the_package(installed, tmp_path):
    import advkit

    model = advkit.load_model("tinynet:width=4", dataset="bars")
    path = advkit.save_checkpoint(model, tmp_path / "tiny")
    sys.path.remove(str(installed))
    try:
        _reload_plugins()
        code, _, err = run("eval", "--model", str(path), "--attacks", "fgsm", "-n", "4")
    finally:
        sys.path.insert(0, str(installed))
        _reload_plugins()
    assert code == 2
    assert err.strip() == (f"advkit: error: checkpoint {path} needs backbone 'tinynet' from the plugin package "
                           f"'advkit-plugin-example' 0.2.0 (pip install advkit-plugin-example), which is not loaded here")
