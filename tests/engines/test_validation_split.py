"""Validation images come from the training split by default: no test image chooses ``best``."""

from __future__ import annotations

import json

import pytest
import torch

import advkit
from advkit._internal.training.setup import Sources, held_out


def test_held_out_images_are_seeded_disjoint_and_leave_the_first_n_train():
    full = advkit.load_dataset("fmnist-mini", "train")
    train, val = held_out(full, Sources(n_train=3000, n_val=400), seed=1)
    assert train.indices == list(range(3000))  # the training images are those a run without validation uses
    assert len(val) == 400 and min(val.indices) >= 3000 and len(set(val.indices)) == 400
    again, other = held_out(full, Sources(n_train=3000, n_val=400), seed=1)[1], held_out(full, Sources(n_train=3000, n_val=400), seed=2)[1]
    assert again.indices == val.indices and other.indices != val.indices
    train, val = held_out(full, Sources(n_train=None, n_val=500), seed=0)  # all images: drawn from all
    assert len(train) + len(val) == len(full) and not set(train.indices) & set(val.indices)


def test_a_run_never_selects_on_test_images(tmp_path):
    result = advkit.train("smallcnn:width=4", epochs=1, n_train=128, n_val=32, val_attack="none", quiet=True,
                          out=tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    v = config["validation"]
    assert v["from"] == "train" and v["n"] == 32 and min(v["indices"]) >= 128
    assert result.validation == {"from": "train", "n": 32}
    full = advkit.load_dataset("fmnist-mini", "train")
    x_val = torch.stack([full[i][0] for i in v["indices"]])
    test_x, _ = advkit.load_dataset("fmnist-mini", "test").tensors()
    flat = test_x.flatten(1)
    assert not any(bool((flat == xi.flatten()).all(1).any()) for xi in x_val)  # no validation image is a test image


def test_validation_from_the_test_split_is_possible_and_said(tmp_path):
    from click.testing import CliRunner

    from advkit._internal.cli import cli

    r = CliRunner().invoke(cli, ["-q", "train", "--model", "smallcnn:width=4", "--epochs", "1", "--n-train", "64",
                                 "--n-val", "16", "--val-from", "test", "--val-attack", "none", "--out",
                                 str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "model selection on test data" in r.output
    assert json.loads((tmp_path / "t" / "config.json").read_text())["validation"] == {"from": "test", "n": 16}
    with pytest.raises(advkit.UserError, match="--n-val 20000 leaves no training image"):
        advkit.train("smallcnn:width=4", epochs=1, n_val=20000, quiet=True)


def test_the_backbone_declares_what_it_trains_with_and_the_run_says_so(capsys):
    result = advkit.train("smallcnn:width=4", epochs=1, n_train=64, n_val=0, out=None)
    out = capsys.readouterr().out
    assert "optimisation: optimizer adam, lr 0.002, weight_decay 0.0, schedule cosine, batch_size 64 " \
           "(declared by the backbone)" in out
    assert result.history[0]["lr"] == pytest.approx(0.002)
    plain = advkit.train("resnet18-cifar:width=4", advkit.plugin.ImageData(
        advkit.plugin.TensorImages(torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))),
        advkit.plugin.DataInfo("rand", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)), epochs=1, n_val=0)
    assert "lr 0.1, momentum 0.9, weight_decay 0.0005, schedule multistep, batch_size 128 (advkit default)" \
        in capsys.readouterr().out and plain.history[0]["lr"] == pytest.approx(0.1)
    given = advkit.train("smallcnn:width=4", epochs=1, n_train=64, n_val=0, optimizer="sgd", lr=0.05, quiet=True)
    assert given.history[0]["lr"] == pytest.approx(0.05)


def test_a_model_that_does_not_learn_is_said_after_the_first_epoch():
    result = advkit.train("smallcnn:width=4", epochs=1, n_train=320, n_val=0, batch_size=16, optimizer="sgd",
                          lr=1e-9, quiet=True)
    assert any("has not fallen below chance level" in n for n in result.history[0]["notes"])
    learning = advkit.train("smallcnn", epochs=1, n_train=1600, n_val=0, batch_size=16, quiet=True)
    assert not any("chance level" in n for n in learning.history[0]["notes"])


def test_stochastic_validation_says_its_cost_and_defaults_to_a_cheaper_eot(capsys):
    result = advkit.train("smallcnn:width=4", defenses="lwta", epochs=1, n_train=64, n_val=8,
                          val_attack="pgd:steps=3")
    err = capsys.readouterr().err
    # PGD-3 declares 4 forward and 3 backward passes per image; EOT 5 (the default) multiplies them
    assert "validation of a stochastic model: pgd (EOT 5) on 8 images, up to 20 forward + 15 backward passes " \
           "per image, 280 per epoch" in err
    assert result.history[0]["val_adaptive"] == "EOT 5"
