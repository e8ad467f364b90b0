"""The one attack call path: library attacks that leave the ball, minimum-norm drops, in-place writes, name takeovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import advkit
import advkit.plugin
from advkit._internal import plugins
from advkit._internal.cli import cli
from advkit._internal.errors import ThreatViolation
from advkit._internal.evaluation.engine import evaluate

EVAL = ["-q", "eval", "-n", "8", "--eps", "0.1", "--batch-size", "8"]


def eval_cli(*args, out=None):
    extra = ["--out", str(out)] if out else []
    r = CliRunner().invoke(cli, [*EVAL, *args, *extra])
    return r.exit_code, r.stderr


def _aa_class():
    from advkit_autoattack import backends

    return importlib_module(backends.choose()).AutoAttack


def importlib_module(name):
    import importlib

    return importlib.import_module(name)


def _out_of_ball(x):
    return (x + 0.3).clamp(0, 1)


def _patch_library(monkeypatch, family: str, attack: str, fn) -> None:
    """Replace the library attack's own work by ``fn(x) -> x_adv`` (a library regression)."""
    if family == "torchattacks":
        import torchattacks

        monkeypatch.setattr(getattr(torchattacks, attack), "forward", lambda self, images, labels: fn(images))
    elif family == "art":
        import art.attacks.evasion as evasion

        monkeypatch.setattr(getattr(evasion, attack), "generate",
                            lambda self, x, y=None, **kw: fn(torch.from_numpy(x)).numpy().astype(np.float32))
    else:
        monkeypatch.setattr(_aa_class(), "run_standard_evaluation", lambda self, x, y, **kw: (fn(x), y))


@pytest.fixture(scope="module")
def aa_minimum_norm():
    """A minimum-norm registration that goes through the AutoAttack adapter."""
    from advkit_autoattack.factory import build

    mod = types.ModuleType("advkit_test_aa_mn")

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        register("aa-mn", lambda model, threat: build(model, threat, version="standard", attacks="apgd-ce"),
                 minimum_norm=True)

    mod.advkit_register_attacks = advkit_register_attacks
    plugins.register_plugin(mod)
    return "aa-mn"


@pytest.mark.parametrize("family, attack, cls", [
    ("torchattacks", "pgd", "PGD"),
    ("art", "art.pgd", "ProjectedGradientDescent"),
    ("autoattack", "aa", None),
])
def test_library_attack_leaving_the_ball_stops_eval(monkeypatch, family, attack, cls):
    _patch_library(monkeypatch, family, cls, _out_of_ball)
    code, err = eval_cli("--attacks", attack)
    assert code == 2
    assert err.startswith(f"advkit: threat-model violation: attack {attack!r} (")
    assert "exceed Linf eps=0.1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("family, attack, cls", [
    ("torchattacks", "cw", "CW"),
    ("art", "art.deepfool", "DeepFool"),
    ("autoattack", "aa-mn", None),
])
def test_minimum_norm_points_outside_the_budget_are_dropped_and_counted(monkeypatch, tmp_path, aa_minimum_norm,
                                                                        family, attack, cls):
    _patch_library(monkeypatch, family, cls, lambda x: 1 - x)  # every point far outside eps=0.1
    code, err = eval_cli("--attacks", attack, out=tmp_path)
    assert code == 0, err
    rep = json.loads((tmp_path / "report.json").read_text())
    (a,) = rep["attacks"]
    assert a["minimum_norm"] is True and a["attempted"] > 0
    assert a["dropped"] == a["attempted"] and a["broken"] == 0
    assert rep["robust_accuracy"] == rep["clean_accuracy"]


@pytest.fixture(scope="module")
def inplace_plugin():
    mod = types.ModuleType("advkit_test_inplace")

    def inplace(model, threat):
        def run(x, y):
            x.add_(3 * threat.eps).clamp_(0, 1)  # writes into its input, returns the same tensor
            return x

        return run

    def spy(model, threat):
        seen = []

        def run(x, y):
            seen.append((x.is_contiguous(), x.dtype, x.device.type, y.dtype))
            return x.clone()

        run.seen = seen
        spy.last = run
        return run

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        register("inplace", inplace)
        register("spy", spy)

    mod.advkit_register_attacks = advkit_register_attacks
    mod.spy = spy
    plugins.register_plugin(mod)
    return mod


def test_attack_writing_into_its_input_is_stopped(trained_cnn, fmnist_test, inplace_plugin):
    with pytest.raises(ThreatViolation, match=r"attack 'inplace'.*exceed Linf eps=0.1 .*worst by 0.2"):
        evaluate(trained_cnn, fmnist_test.first(16), ["inplace"], eps="0.1", quiet=True)


def test_attacks_get_contiguous_float32_batches_on_the_model_device(trained_cnn, fmnist_test, inplace_plugin):
    x, y = fmnist_test.first(16).tensors()
    x_cl = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major memory
    assert x_cl.shape == x.shape and not x_cl.is_contiguous()
    evaluate(trained_cnn, (x_cl, y.int()), ["spy"], eps="0.1", quiet=True)
    assert set(inplace_plugin.spy.last.seen) == {(True, torch.float32, "cpu", torch.int64)}


class TinyRGB(nn.Module):
    """A CIFAR-shaped classifier (3x32x32 inputs, 3 classes), small enough for every attack family."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 15 * 15, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """An image folder of RGB PNGs, each filed under the class TinyRGB predicts (clean accuracy 100%)."""
    from PIL import Image

    root, model = tmp_path_factory.mktemp("rgb"), TinyRGB().eval()
    rng = np.random.default_rng(0)
    counts = [0, 0, 0]
    for _ in range(3000):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        with torch.no_grad():
            c = int(model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).argmax())
        if counts[c] < 4:
            (root / f"class{c}").mkdir(exist_ok=True)
            Image.fromarray(img).save(root / f"class{c}" / f"{counts[c]}.png")
            counts[c] += 1
        if min(counts) == 4:
            return root
    raise AssertionError(f"could not fill every class: {counts}")


def test_every_attack_family_runs_on_an_rgb_image_folder(rgb_folder, tmp_path):
    from advkit._internal.data import load_dataset

    data = load_dataset(str(rgb_folder), "test")
    assert data.tensors()[0].shape == (12, 3, 32, 32)
    opts = {"aa": {"n_iter": "3", "n_queries": "10"}, "square": {"n_queries": "10"}, "cw": {"steps": "5"}}
    attacks = ["fgsm", "pgd", "cw", "square", "art.fgsm", "aa"]
    r = evaluate(TinyRGB().eval(), data, attacks, eps="8/255", attack_opts=opts, independent=True, quiet=True,
                 out=tmp_path)
    assert r.clean_accuracy == 1.0
    assert [a.name for a in r.attacks] == attacks and all(a.attempted == 12 for a in r.attacks)
    assert r.attacks[-1].extra["autoattack_implementation"] in ("autoattack", "pyautoattack")


ROOT = Path(__file__).resolve().parents[2]


def _fake_pgd(root: Path, name: str) -> Path:
    """A distribution ``name`` (a bare dist-info) whose plugin registers a do-nothing attack called ``pgd``."""
    root.mkdir()
    (root / f"{name}.py").write_text(
        "import advkit\n"
        "def pgd(model, threat):\n"
        "    return lambda x, y: x.clone()\n"
        "@advkit.plugin.hookimpl\n"
        "def advkit_register_attacks(register):\n"
        "    register('pgd', pgd)\n"
    )
    info = root / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[advkit]\n{name} = {name}\n")
    return root


@pytest.mark.parametrize("order", [("aaa_fakepgd", "zzz_fakepgd"), ("zzz_fakepgd", "aaa_fakepgd")])
def test_a_plugin_registering_pgd_cannot_take_it_over(tmp_path, order):
    paths = [str(_fake_pgd(tmp_path / name, name)) for name in order]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "ev"
    r = subprocess.run([sys.executable, "-m", "advkit", *EVAL, "--attacks", f"pgd,{order[0]}.pgd", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for name in order:
        assert r.stderr.count(f"plugin {name!r} also registers attack 'pgd', which 'torchattacks' provides") == 1, r.stderr
    rep = json.loads((out / "report.json").read_text())
    builtin, fake = rep["attacks"]
    assert (builtin["provider"], builtin["package"], builtin["qualified"]) == ("torchattacks", "advkit", "torchattacks.pgd")
    assert builtin["version"] and builtin["implementation"].startswith("torchattacks")
    assert (fake["provider"], fake["package"], fake["version"]) == (order[0], order[0], "0.0.1")
    assert fake["broken"] == 0 and builtin["broken"] > 0  # the do-nothing pgd did not replace the real one
