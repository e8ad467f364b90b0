"""The training engine: steps, files, resumption, schedules, augmentation, the CLI and torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import advkit
from advkit._internal.checkpoint import load_checkpoint
from advkit._internal.cli import cli
from advkit._internal.data import load_dataset
from advkit._internal.defense import Defense
from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.models import load_model
from advkit._internal.seeds import derive_seed
from advkit._internal.threat import ThreatModel
from advkit._internal.training.batching import apply_augmentation, augmentation_for, draw_augmentation, epoch_batches
from advkit._internal.training.optim import lr_at
from advkit._internal.training.trainer import train

LINF = ThreatModel.parse("Linf", "0.1")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=96)


@pytest.fixture(scope="module")
def val():
    return load_dataset("fmnist-mini", "test", n=48)


def smallcnn(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,))


def has_attack(name: str) -> bool:
    from advkit._internal.plugins import registry

    return name in registry("attack")


def run_cli(*args):
    return CliRunner().invoke(cli, ["--seed", "0", "-q", *args], catch_exceptions=False)


# ----------------------------------------------------------------------------- engine pieces


def test_api_name():
    import advkit._internal.training.trainer as module

    assert callable(advkit.train) and module.train is train


def test_schedules():
    assert [lr_at(0.1, "multistep", e, 8) for e in range(8)] == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert lr_at(0.1, "multistep", 0, 1) == 0.1
    cos = [lr_at(0.1, "cosine", e, 4) for e in range(4)]
    assert cos[0] == pytest.approx(0.1) and cos == sorted(cos, reverse=True) and cos[-1] > 0
    assert lr_at(0.1, "constant", 3, 4) == 0.1


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_batches(100, 32, seed=1, epoch=0)
    assert [len(b) for b in a] == [32, 32, 32, 4]
    assert torch.equal(torch.cat(a).sort().values, torch.arange(100))
    assert all(torch.equal(x, y) for x, y in zip(a, epoch_batches(100, 32, seed=1, epoch=0)))
    assert not torch.equal(a[0], epoch_batches(100, 32, seed=1, epoch=1)[0])
    assert not torch.equal(a[0], epoch_batches(100, 32, seed=2, epoch=0)[0])
    # two ranks split every global batch between them
    r0, r1 = (epoch_batches(100, 32, 1, 0, rank=r, world=2) for r in (0, 1))
    for g, b0, b1 in zip(a, r0, r1):
        assert sorted(torch.cat([b0, b1]).tolist()) == sorted(g.tolist())
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 2)


def test_augmentation_crops_and_flips():
    assert augmentation_for((1, 28, 28)) == (2, False)
    assert augmentation_for((3, 32, 32)) == (4, True)
    x = torch.rand(6, 3, 8, 8)
    n = x.shape[0]
    zero = torch.zeros(n, dtype=torch.long)
    assert torch.equal(apply_augmentation(x, 2, zero + 2, zero + 2, torch.zeros(n, dtype=torch.bool)), x)
    flipped = apply_augmentation(x, 2, zero + 2, zero + 2, torch.ones(n, dtype=torch.bool))
    assert torch.equal(flipped, x.flip(3))
    shifted = apply_augmentation(x, 2, zero, zero + 2, torch.zeros(n, dtype=torch.bool))
    assert torch.equal(shifted[:, :, 2:], x[:, :, :-2]) and (shifted[:, :, :2] == 0).all()
    g = torch.Generator().manual_seed(0)
    oy, ox, fl = draw_augmentation(1000, 4, True, g)
    assert oy.min() == 0 and oy.max() == 8 and 0.4 < fl.float().mean() < 0.6


# ----------------------------------------------------------------------------- training runs


def test_standard_training_writes_checkpoints_metrics_and_state(tmp_path, data, val):
    attack = "pgd:steps=2" if has_attack("pgd") else "none"
    result = train(smallcnn(), data, epochs=2, batch_size=32, lr=1e-3, optimizer="adam", threat=LINF,
                   val_data=val, val_attack=attack, out=tmp_path, quiet=True, command="test")
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines == result.history
    assert set(lines[0]) >= {"epoch", "lr", "train_loss", "train_acc", "val_clean", "val_robust", "time"}
    assert 0 <= lines[-1]["val_clean"] <= 1 and 0 <= lines[-1]["train_acc"] <= 1
    if attack != "none":
        assert lines[-1]["val_robust"] is not None and lines[-1]["val_robust"] <= lines[-1]["val_clean"]
    for name in ("last", "best", "train_state"):
        assert (tmp_path / f"{name}.safetensors").is_file() and (tmp_path / f"{name}.json").is_file()
    side = json.loads((tmp_path / "last.json").read_text())
    for key in ("arch", "arch_params", "mean", "std", "defenses", "stochastic", "epoch", "metrics", "dataset", "command", "seed"):
        assert key in side
    assert side["epoch"] == 2 and side["defenses"] == [] and side["stochastic"] is False
    loaded = load_checkpoint(tmp_path / "last.safetensors")
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x))
    assert result.best_epoch in (1, 2)


class Stop(Defense):
    """Interrupts training at the start of epoch ``at`` (a crash between epochs)."""

    name = "stop"

    def __init__(self, at=None):
        super().__init__()
        self.at = at

    def on_epoch_start(self, model, data, ctx):
        if self.at is not None and ctx.epoch == self.at:
            raise KeyboardInterrupt


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, data):
    kw = dict(epochs=2, batch_size=32, lr=0.02, momentum=0.9, threat=LINF, quiet=True, seed=3, augment=True)
    specs = ["lwta", "pgd-at:steps=1"]
    full = train(smallcnn(), data, defenses=[*specs, Stop()], out=tmp_path / "full", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(smallcnn(), data, defenses=[*specs, Stop(at=1)], out=tmp_path / "cut", **kw)
    assert json.loads((tmp_path / "cut" / "train_state.json").read_text())["epoch"] == 1
    resumed = train(smallcnn(seed=99), data, defenses=[*specs, Stop()], out=tmp_path / "cut", resume=True, **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history], abs=1e-6)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2


class ColourSet(torch.utils.data.Dataset):
    """Random 3x32x32 images served one by one (not an in-memory tensor set)."""

    def __init__(self, n=48):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_colour_data_served_item_by_item():
    from advkit._internal.data import DataInfo, ImageData

    info = DataInfo("colour", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    data = ImageData(ColourSet(), info)
    torch.manual_seed(0)
    model = load_model("smallcnn:in_chans=3", num_classes=10, input_shape=(3, 32, 32), mean=info.mean, std=info.std)
    result = train(model, data, epochs=1, batch_size=16, lr=0.01, quiet=True, val_data=data, val_attack="none")
    assert result.history[0]["val_clean"] is not None and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_resume_needs_a_state(tmp_path, data):
    with pytest.raises(UserError, match="nothing to resume"):
        train(smallcnn(), data, epochs=1, out=tmp_path, resume=True, quiet=True)


def test_context_index_holds_dataset_indices(data):
    seen = []

    class Probe(Defense):
        name = "probe"

        def transform_batch(self, x, y, ctx):
            xs, ys = data.tensors()
            assert torch.equal(x, xs[ctx.index]) and torch.equal(y, ys[ctx.index])
            seen.append(ctx.index.clone())
            return x, y

    train(smallcnn(), data, defenses=[Probe()], epochs=1, batch_size=40, augment=False, quiet=True)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(data)))


def test_training_perturbations_are_checked(data):
    class Cheat(Defense):
        name = "cheat"

        def perturb(self, model, x, y, ctx):
            return (x + 0.5).clamp(0, 1)

    with pytest.raises(ThreatViolation, match="cheat"):
        train(smallcnn(), data, defenses=[Cheat()], epochs=1, batch_size=32, threat=LINF, quiet=True)


def test_bad_arguments(data):
    with pytest.raises(UserError, match="epochs"):
        train(smallcnn(), data, epochs=0)
    with pytest.raises(UserError, match="schedule"):
        train(smallcnn(), data, epochs=1, schedule="linear")
    with pytest.raises(UserError, match="unknown attack"):
        train(smallcnn(), data, epochs=1, val_data=data, val_attack="no-such-attack", quiet=True)


# ----------------------------------------------------------------------------- command line


def test_cli_train(tmp_path):
    attack = "pgd:steps=2" if has_attack("pgd") else "none"
    out = tmp_path / "run"
    r = run_cli("train", "--epochs", "1", "--n-train", "256", "--n-val", "64", "--batch-size", "64",
                "--lr", "0.001", "--optimizer", "adam", "--defense", "pgd-at:steps=1", "--val-attack", attack,
                "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "best epoch 1" in r.output and "pgd-at" in r.output
    side = json.loads((out / "best.json").read_text())
    assert [d["name"] for d in side["defenses"]] == ["pgd-at"] and side["defenses"][0]["params"]["steps"] == 1
    assert side["threat"]["eps"] == pytest.approx(0.1)  # fmnist-mini's usual budget
    assert side["command"].startswith("advkit")
    assert load_checkpoint(out).num_classes == 10


@pytest.mark.parametrize("args,message", [
    (["--defense", "pgd-at", "--defense", "trades"], "both set the objective point"),
    (["--defense", "no-such-defense"], "unknown defense"),
    (["--resume"], "nothing to resume"),
    (["--eps", "lots"], "not a number"),
    (["--optimizer", "adma"], "--optimizer must be one of sgd, adam, got 'adma' (did you mean 'adam'?)"),
    (["--schedule", "cosin"], "did you mean 'cosine'?"),
    (["--val-eot", "0"], "--val-eot must be a whole number >= 1"),
    (["--resume", "--overwrite"], "pass one of them"),
])
def test_cli_errors(tmp_path, args, message):
    r = CliRunner().invoke(cli, ["-q", "train", "--epochs", "1", "--n-train", "32", "--n-val", "0",
                                 "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output


# ----------------------------------------------------------------------------- torchrun


def _env():
    import advkit_training

    plugins = str(Path(advkit_training.__file__).resolve().parent.parent)
    root = str(Path(advkit.__file__).resolve().parent.parent)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, plugins, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    args = ["train", "--epochs", "1", "--n-train", "128", "--batch-size", "32", "--n-val", "32",
            "--val-attack", "none", "--lr", "0.05", "--optimizer", "sgd"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "advkit", "--seed", "0", "-q", "--device", "cpu", *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # only rank 0 reports
    ddp = load_checkpoint(tmp_path / "ddp")
    r = run_cli(*args, "--out", str(tmp_path / "one"))
    assert r.exit_code == 0, r.output
    one = load_checkpoint(tmp_path / "one")
    for k, v in one.state_dict().items():
        assert torch.allclose(v, ddp.state_dict()[k], atol=1e-5), k
    a = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text())
    b = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())
    assert a["val_clean"] == b["val_clean"] and a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
