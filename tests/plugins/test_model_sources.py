"""Model sources: the standard AutoAttack on a plain install, RobustBench's layout and the timm hub cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import advkit
from advkit._internal.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _tiny_classifier():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    return advkit.load_model(net, num_classes=10, input_shape=(3, 8, 8))


def test_pyautoattack_is_a_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.replace(" ", "").startswith("pyautoattack") for d in project["dependencies"])


def test_plain_install_resolves_aa_to_the_standard_autoattack(monkeypatch):
    monkeypatch.delenv("ADVKIT_AUTOATTACK", raising=False)
    atk = advkit.create_attack("aa", _tiny_classifier(), eps="8/255")
    assert atk.extra["autoattack_implementation"] in ("autoattack", "pyautoattack")
    assert atk.extra["autoattack_standard"] is True
    assert atk.extra["autoattack_attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert "fra31 AutoAttack, standard" in atk.implementation


# --- RobustBench ----------------------------------------------------------------------------------

def _robustbench_file(model_dir: Path, name: str, state: dict) -> Path:
    """A checkpoint as RobustBench stores it: MODEL_DIR/<dataset>/<threat>/<NAME>.pt, DataParallel keys."""
    path = model_dir / "cifar10" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return path


def test_robustbench_layout_loads_into_the_named_architecture(tmp_path):
    from advkit._internal.models import build_backbone

    torch.manual_seed(1)
    reference = build_backbone("smallcnn", 10, (3, 32, 32)).eval()
    path = _robustbench_file(tmp_path, "Tiny2026Test", reference.state_dict())
    model = advkit.load_model(f"robustbench:Tiny2026Test:arch=smallcnn,model_dir={tmp_path}",
                              context={"dataset": "cifar10", "norm": "Linf"})
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))  # no normalization added: RobustBench's models own theirs
    zoo = model.info["zoo"]
    assert (zoo["source"], zoo["name"], zoo["dataset"], zoo["threat_model"]) == ("robustbench", "Tiny2026Test", "cifar10", "Linf")
    assert zoo["files"] == [str(path)]
    assert model.mean.abs().sum() == 0 and torch.all(model.std == 1)


def test_robustbench_model_checkpoint_rebuilds(tmp_path):
    from advkit._internal.checkpoint import save_checkpoint
    from advkit._internal.models import build_backbone

    torch.manual_seed(4)
    _robustbench_file(tmp_path, "Tiny2026Test", build_backbone("smallcnn", 10, (3, 32, 32)).state_dict())
    model = advkit.load_model(f"robustbench:Tiny2026Test:arch=smallcnn,model_dir={tmp_path}",
                              context={"dataset": "cifar10", "norm": "Linf"})
    path = save_checkpoint(model, tmp_path / "run" / "model.safetensors")
    again = advkit.load_model(str(path))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_robustbench_missing_file_says_where_it_goes(tmp_path):
    with pytest.raises(UserError) as err:
        advkit.load_model(f"robustbench:Carmon2019Unlabeled:arch=wrn-34-10,model_dir={tmp_path}",
                          context={"dataset": "cifar10", "norm": "Linf"})
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt") in msg


def test_robustbench_dataset_and_threat_checked(tmp_path):
    with pytest.raises(UserError, match="RobustBench has models for"):
        advkit.load_model("robustbench:X:arch=smallcnn", context={"dataset": "fmnist-mini", "norm": "Linf"})
    with pytest.raises(UserError, match="threat model"):
        advkit.load_model("robustbench:X:arch=smallcnn", context={"dataset": "cifar10", "norm": "L1"})


def test_robustbench_package_path(tmp_path, monkeypatch):
    """With an importable robustbench, its own loader reads the file (a tiny entry added to its zoo)."""
    from advkit_models import zoo

    if zoo._robustbench_package() is None:
        pytest.skip("the robustbench package does not import here (1.1.1 needs setuptools<81 and autoattack)")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(2)
    make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))  # noqa: E731
    reference = make().eval()
    entries = model_dicts[BenchmarkDataset("cifar10")][ThreatModel("Linf")]
    monkeypatch.setitem(entries, "Tiny2026Test", {"model": make, "gdrive_id": "none"})
    _robustbench_file(tmp_path, "Tiny2026Test", reference.state_dict())
    model = advkit.load_model(f"robustbench:Tiny2026Test:model_dir={tmp_path}", context={"dataset": "cifar10"})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.info["zoo"]["loader"].startswith("robustbench")
    with pytest.raises(UserError) as err:  # a real entry, no file, no download=true: no network access tried
        advkit.load_model(f"robustbench:Carmon2019Unlabeled:model_dir={tmp_path}", context={"dataset": "cifar10"})
    assert str(tmp_path / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt") in str(err.value)
    with pytest.raises(UserError, match="did you mean 'robustbench:Carmon2019Unlabeled'"):
        advkit.load_model("robustbench:Carmon2019Unlabelled", context={"dataset": "cifar10"})


# --- Hugging Face hub (timm) ----------------------------------------------------------------------

def _hub_cache(cache: Path, repo: str, model) -> None:
    """The huggingface_hub cache layout: models--ORG--NAME/{refs/main, snapshots/<rev>/...}."""
    from timm.models._hub import save_for_hf

    rev = "0123456789abcdef0123456789abcdef01234567"
    org, name = repo.split("/")
    folder = cache / f"models--{org}--{name}"
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    save_for_hf(model, str(snap), safe_serialization=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(rev)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import timm
    from huggingface_hub import constants
    from timm.models import _hub

    if not (_hub._has_hf_hub() if callable(_hub._has_hf_hub) else _hub._has_hf_hub):
        pytest.skip(f"timm {timm.__version__} cannot use the installed huggingface_hub")
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hf_hub_model_loads_from_the_local_cache(offline_hub):
    import timm

    arch = "test_resnet" if timm.is_model("test_resnet") else "resnet10t"  # timm 1.0.9 (robustbench's pin) lacks test_*
    torch.manual_seed(3)
    net = timm.create_model(arch, num_classes=7).eval()
    net.pretrained_cfg = {**net.pretrained_cfg, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
                          "input_size": (3, 32, 32)}
    _hub_cache(offline_hub, "advkit-test/tiny-resnet", net)
    config = json.loads(next(offline_hub.rglob("config.json")).read_text())
    assert config["architecture"] == arch

    model = advkit.load_model("hf-hub:advkit-test/tiny-resnet", num_classes=7, input_shape=(3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-6)
    assert model.num_classes == 7 and model.input_shape == (3, 32, 32)
    assert model.info["zoo"] == {"source": "hf-hub", "name": "advkit-test/tiny-resnet", "architecture": arch,
                                 "normalization": model.info["zoo"]["normalization"]}


def test_hf_hub_missing_model_is_one_line(offline_hub):
    with pytest.raises(UserError) as err:
        advkit.load_model("hf-hub:advkit-test/not-there")
    assert "not in the local Hugging Face cache" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="ORG/NAME"):
        advkit.load_model("hf-hub:no-slash")


def test_model_sources_are_prefix_resolvers_of_the_models_plugin():
    from advkit._internal.plugins import registry

    reg = registry("backbone")
    assert reg.get("robustbench").can("prefix") == "robustbench:"
    assert reg.get("hf-hub").can("prefix") == "hf-hub:"
    assert "advkit_models" in sys.modules


def test_hf_hub_unreachable_and_not_cached_is_refused_at_once(tmp_path):
    """Online mode, no cache, no hub (a closed local port): one line within seconds, not after retries."""
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "home"))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "advkit", "eval", "-m", "hf-hub:someone/nothing", "-a", "none"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "the hub cannot be reached" in r.stderr and "hf download someone/nothing" in r.stderr
    assert r.stderr.count("\n") == 1 and time.time() - t0 < 60
