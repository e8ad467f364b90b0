"""The plugin system: entry-point loading, the allow-list, isolation of broken plugins, a real third-party plugin."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advkit import plugins

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "advkit-plugin-example"


def advkit(*args, env=None, check=True):
    e = {**os.environ, **(env or {})}
    r = subprocess.run([sys.executable, "-m", "advkit", *args], capture_output=True, text=True, env=e, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_builtins_are_entry_points():
    eps = {ep.name: ep.value for ep in md.entry_points(group="advkit")}
    for name, module in {"models": "advkit_models", "datasets": "advkit_datasets", "torchattacks": "advkit_torchattacks", "art": "advkit_art"}.items():
        assert eps.get(name) == module
    loaded = {p.name: p for p in plugins.plugins()}
    assert not loaded["models"].error and loaded["models"].package == "advkit"


def test_allow_list(monkeypatch):
    try:
        monkeypatch.setenv("ADVKIT_LOAD_PLUGINS", "models")
        plugins.reset()
        assert [p.name for p in plugins.plugins()] == ["models"]
        assert len(plugins.registry("backbone")) > 0 and len(plugins.registry("attack")) == 0
        monkeypatch.setenv("ADVKIT_LOAD_PLUGINS", "")
        plugins.reset()
        assert plugins.plugins() == [] and len(plugins.registry("dataset")) == 0
    finally:
        monkeypatch.undo()
        plugins.reset()
        plugins.load_plugins()


def _fake_distribution(tmp_path: Path, name: str, module_source: str) -> dict:
    """A plugin installed as a bare dist-info on PYTHONPATH, found like any other distribution."""
    (tmp_path / f"{name}.py").write_text(module_source)
    info = tmp_path / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[advkit]\n{name} = {name}\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_plugin_that_raises_on_import_is_isolated(tmp_path):
    env = _fake_distribution(tmp_path, "advkit_broken", "raise RuntimeError('boom at import')\n")
    r = advkit("list", "plugins", "--json", env=env)
    assert "plugin 'advkit_broken' (advkit_broken) failed to load: RuntimeError: boom at import" in r.stderr
    listing = json.loads(r.stdout)["plugins"]
    status = {p["name"]: p.get("error", "") for p in listing}
    assert "boom" in status["advkit_broken"] and status["models"] == ""
    r = advkit("list", "backbones", env=env)
    assert "smallcnn" in r.stdout


def test_plugin_that_raises_in_a_hook_is_isolated(tmp_path):
    source = (
        "import advkit\n"
        "@advkit.hookimpl\n"
        "def advkit_register_attacks(register):\n"
        "    raise ValueError('bad hook')\n"
    )
    env = _fake_distribution(tmp_path, "advkit_badhook", source)
    r = advkit("list", "attacks", env=env)
    assert "plugin 'advkit_badhook' failed in advkit_register_attacks and is skipped: ValueError: bad hook" in r.stderr
    assert "pgd" in r.stdout


@pytest.fixture(scope="module")
def example_installed():
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "-e", str(EXAMPLE)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    try:
        yield
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "advkit-plugin-example"], capture_output=True)


def test_example_plugin_from_the_cli(example_installed, tmp_path):
    r = advkit("list", "--json")
    listing = json.loads(r.stdout)
    example = {p["name"]: p for p in listing["plugins"]}["example"]
    assert example["package"] == "advkit-plugin-example" and example["version"] == "0.1.0"
    assert "noise" in {a["name"] for a in listing["attacks"] if a["provider"] == "example"}
    assert "saliency" in {e["name"] for e in listing["explainers"]}
    r = advkit("--quiet", "eval", "--attacks", "noise,fgsm", "--n", "40", "--out", str(tmp_path / "ev"))
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert [a["name"] for a in rep["attacks"]] == ["noise", "fgsm"]
    assert rep["attacks"][0]["implementation"] == "advkit-plugin-example 0.1.0 noise"
    assert rep["robust_accuracy"] <= rep["clean_accuracy"]
    advkit("explain", "--method", "saliency", "--n", "4", "--out", str(tmp_path / "ex"))
    assert (tmp_path / "ex" / "figure.png").stat().st_size > 1000
    import numpy as np

    arrays = np.load(tmp_path / "ex" / "explanation.npz")
    assert arrays["maps"].shape == (4, 1, 28, 28) and (arrays["maps"] >= 0).all() and arrays["maps"].max() > 0
