"""What a training run records and reads: curves, CSV, TensorBoard, --config, and its validation."""

from __future__ import annotations

import csv
import json
import sys
import types

import pytest
import torch
from click.testing import CliRunner

import advkit
import advkit.plugin
from advkit._internal.cli import cli
from advkit._internal.data import load_dataset
from advkit._internal.models import load_model
from advkit._internal.threat import ThreatModel
from advkit._internal.training import records
from advkit._internal.training.records import epoch_line
from advkit._internal.training.trainer import train

LINF = ThreatModel.parse("Linf", "0.1")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=32)


@pytest.fixture(scope="module")
def val():
    return load_dataset("fmnist-mini", "test", n=16)


def smallcnn(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("smallcnn:width=8", num_classes=10, input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,))


def test_curves_csv_and_metrics(tmp_path, data, val):
    from PIL import Image

    result = train(smallcnn(), data, epochs=2, batch_size=16, lr=1e-3, optimizer="adam", threat=LINF, val_data=val,
                   val_attack="fgsm", out=tmp_path, quiet=True)
    with Image.open(tmp_path / "curves.png") as img:
        assert img.format == "PNG" and img.size == (1000, 400)
    fig = records.plot_curves(result.history)
    loss_ax, acc_ax = fig.axes
    assert len(fig.axes) == 2 and loss_ax.get_title() == "training loss" and acc_ax.get_title() == "accuracy"
    assert [ln.get_label() for ln in acc_ax.lines] == ["train", "val clean", "val fgsm"]
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx([h["train_loss"] for h in result.history])
    assert list(acc_ax.lines[2].get_ydata()) == pytest.approx([100 * h["val_robust"] for h in result.history])
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert tuple(rows[0]) == records.CSV_COLUMNS
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(lines) == 2
    for row, rec in zip(rows, lines):
        assert int(row["epoch"]) == rec["epoch"] and float(row["train_loss"]) == pytest.approx(rec["train_loss"])
        assert float(row["val_robust"]) == pytest.approx(rec["val_robust"]) and row["val_attack"] == "fgsm"
        assert row["val_adaptive"] == "" and row["notes"] == ""


def test_tensorboard_gets_the_scalars_when_it_imports(tmp_path, data, monkeypatch):
    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    result = train(smallcnn(), data, epochs=2, batch_size=16, lr=1e-3, optimizer="adam", threat=LINF,
                   val_attack="none", out=tmp_path, quiet=True)
    assert calls[0] == ("dir", str(tmp_path / "tensorboard")) and calls[-1] == ("close",)
    for h in result.history:
        assert ("train/loss", pytest.approx(h["train_loss"]), h["epoch"]) in calls
        assert ("train/acc", pytest.approx(h["train_acc"]), h["epoch"]) in calls
    assert not any(c[0] == "val/clean" for c in calls)  # no validation, no scalar


def _cli(*args):
    return CliRunner().invoke(cli, ["--seed", "0", "-q", "train", *args])


def test_config_file_gives_defaults_and_is_saved(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\nepochs = 1\nn-train = 32\nn_val = 0\nbatch-size = 16\nlr = 0.001\noptimizer = "adam"\n'
                   'defense = ["pgd-at:steps=1", "label-smoothing:smoothing=0.2"]\nval-attack = "none"\n')
    r = _cli("--config", str(cfg), "--lr", "0.002", "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 16 and saved["n_train"] == 32 and saved["optimizer"] == "adam"
    assert saved["lr"] == 0.002  # the command line wins
    assert saved["defenses"] == ["pgd-at:steps=1", "label-smoothing:smoothing=0.2"]
    side = json.loads((tmp_path / "a" / "last.json").read_text())
    assert [d["name"] for d in side["defenses"]] == ["pgd-at", "label-smoothing"]
    # the saved file is itself a config: the same run again, bit for bit
    r = _cli("--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    a, b = (load_model(str(tmp_path / d)) for d in ("a", "b"))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epoch = 2\n")
    r = _cli("--config", str(bad), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "unknown option 'epoch' (did you mean 'epochs'?)" in r.output
    bad.write_text("epochs = [\n")
    r = _cli("--config", str(bad), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "cannot be read" in r.output
    r = _cli("--config", str(tmp_path / "none.toml"))
    assert r.exit_code == 2 and "file not found" in r.output


# ----------------------------------------------------------------------------- validation attacks


@pytest.fixture(scope="module")
def probe_plugin():
    """Test attacks: ``outside`` writes x + 3 eps into its input and returns it; ``probe`` records its model."""
    from advkit._internal.plugins import register_plugin

    seen = {}

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        def outside(model, threat):
            def attack(x, y):
                x.add_(3 * threat.eps)
                return x

            return attack

        def probe(model, threat):
            seen["model"] = model
            return lambda x, y: x

        register("outside", outside)
        register("probe", probe)

    register_plugin(types.SimpleNamespace(advkit_register_attacks=advkit_register_attacks, __name__="test_val_attacks"))
    return seen


def test_val_attack_leaving_the_ball_stops_training(tmp_path, probe_plugin):
    r = _cli("--epochs", "1", "--n-train", "32", "--n-val", "16", "--batch-size", "16", "--val-attack", "outside",
             "--out", str(tmp_path))
    assert r.exit_code == 2, r.output
    assert "threat-model violation" in r.output and "'outside'" in r.output
    assert not (tmp_path / "best.safetensors").exists()


@pytest.mark.parametrize("eot,label", [(3, "EOT 3"), (1, "single sample, not adaptive")])
def test_val_attack_on_a_stochastic_model_is_adaptive(data, val, probe_plugin, eot, label, capsys):
    from advkit._internal.stochastic import EOTModel

    result = train(smallcnn(), data, defenses=["lwta"], epochs=1, batch_size=16, lr=1e-3, optimizer="adam",
                   threat=LINF, val_data=val, val_attack="probe", val_eot=eot, quiet=False)
    model = probe_plugin["model"].model  # the attack sees the model through advkit's pass counter
    if eot > 1:
        assert isinstance(model, EOTModel) and model.samples == eot and model.model is result.model
    else:
        assert model is result.model
    rec = result.history[0]
    assert rec["val_adaptive"] == label
    line = epoch_line(rec, 1)
    assert f"val probe ({label})" in line and line in capsys.readouterr().out
