"""The Python API and the command line: the same arguments give the same result, the engines own the
defaults, and the first hour's rough edges stay filed down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import advkit
from advkit._internal.errors import UserError


def cli(*args, cwd=None, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "advkit", *map(str, args)], capture_output=True, text=True,
                       timeout=600, cwd=cwd, env=env)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_eval_cli_and_api_agree_and_root_options_may_follow_the_command(tmp_path):
    before = cli("-q", "--seed", "3", "eval", "-a", "fgsm,pgd:steps=3", "-n", "40", "--batch-size", "16",
                 "--out", tmp_path / "a")
    after = cli("eval", "-a", "fgsm,pgd:steps=3", "-n", "40", "--batch-size", "16", "--seed", "3", "-q",
                "--out", tmp_path / "b")
    assert "%|" not in before.stderr + after.stderr  # -q silenced the bars, before or after the command
    api = advkit.evaluate(attacks="fgsm,pgd:steps=3", n=40, batch_size=16, seed=3, quiet=True)
    for run in ("a", "b"):
        rep = json.loads((tmp_path / run / "report.json").read_text())
        assert rep["seed"] == 3 and rep["model"] == api.meta["model"] == "smallcnn-fmnist"
        assert rep["dataset"]["name"] == "fmnist-mini" and rep["threat_model"]["eps"] == pytest.approx(0.1)
        assert rep["clean_accuracy"] == api.clean_accuracy and rep["robust_accuracy"] == api.robust_accuracy
        assert [a["broken"] for a in rep["attacks"]] == [a.broken for a in api.attacks]


def test_train_cli_and_api_agree_on_the_weights(tmp_path):
    args = dict(epochs=1, n_train=96, n_val=16, batch_size=32, val_attack="none", seed=5, lr=0.05)
    cli("-q", "train", "--model", "smallcnn:width=8", *[f"--{k.replace('_', '-')}={v}" for k, v in args.items()
                                                      if k != "seed"], "--seed", 5, "--out", tmp_path / "t")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command ran (OMP_NUM_THREADS=1): the same reduction order
    try:
        result = advkit.train("smallcnn:width=8", quiet=True, **args)
    finally:
        torch.set_num_threads(threads)
    saved = load_file(str(tmp_path / "t" / "last.safetensors"))
    mine = {k: v for k, v in result.model.state_dict().items()}
    common = [k for k in mine if k in saved]
    assert len(common) >= 6
    for k in common:
        torch.testing.assert_close(saved[k], mine[k].cpu(), rtol=0, atol=0)
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["dataset"] == "fmnist-mini" and config["seed"] == 5  # saved resolved


def test_seed_in_a_train_config_file(tmp_path):
    (tmp_path / "c.toml").write_text('seed = 7\nepochs = 1\nn-train = 64\nn-val = 0\nmodel = "smallcnn:width=4"\n')
    cli("-q", "train", "--config", tmp_path / "c.toml", "--out", tmp_path / "t")
    assert json.loads((tmp_path / "t" / "config.json").read_text())["seed"] == 7


def test_explain_cli_and_api_agree(tmp_path):
    cli("-q", "explain", "--method", "ig:baseline=noise,steps=8", "-n", "3", "--seed", "11", "--out", tmp_path / "e")
    saved = np.load(tmp_path / "e" / "explanation.npz")
    model = advkit.load_model("smallcnn-fmnist")
    x, y = advkit.load_dataset("fmnist-mini").first(3).tensors()
    e = advkit.explain(model, x, y, "ig", baseline="noise", steps=8,
                       ctx=advkit.plugin.ExplainContext(dataset="fmnist-mini", seed=11))
    np.testing.assert_allclose(saved["maps"], e.maps.numpy(), rtol=1e-5, atol=1e-6)
    other = advkit.explain(model, x, y, "ig", baseline="noise", steps=8,
                           ctx=advkit.plugin.ExplainContext(dataset="fmnist-mini", seed=12))
    assert not np.allclose(saved["maps"], other.maps.numpy())  # the seed reaches the noise baseline


@pytest.mark.parametrize("x, y, message", [
    (torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), "non-empty"),
    (torch.rand(2, 1, 28, 28), torch.tensor([1, 2, 3]), "one integer label per image"),
    (torch.rand(2, 1, 28, 28), torch.tensor([1.0, 2.0]), "one integer label per image"),
    (torch.rand(2, 1, 28, 28), torch.tensor([1, 10]), r"labels must lie in \[0, 10\)"),
    (torch.full((2, 1, 28, 28), float("nan")), torch.tensor([1, 2]), "NaN or infinite"),
    (torch.rand(2, 1, 28, 28) * 255, torch.tensor([1, 2]), "0-255 values"),
])
def test_explain_checks_its_batch_like_an_evaluation(x, y, message):
    with pytest.raises(UserError, match=message):
        advkit.explain(advkit.load_model("smallcnn-fmnist"), x, y, "saliency")


@pytest.mark.parametrize("scale, message", [(255.0, "0-255 values"), (float("nan"), "NaN or infinite")])
def test_train_checks_its_data_like_an_evaluation(scale, message):
    x, y = advkit.load_dataset("fmnist-mini").first(64).tensors()
    data = advkit.plugin.ImageData(advkit.plugin.TensorImages(x * scale, y), advkit.load_dataset("fmnist-mini").info)
    with pytest.raises(UserError, match=message):
        advkit.train("smallcnn:width=4", data, epochs=1, n_val=0, quiet=True)


def test_labels_are_checked_alike_by_evaluation_training_attacks_and_explanation():
    x, y = advkit.load_dataset("fmnist-mini").first(8).tensors()
    y = y.clone()
    y[2], y[7] = -1, 10
    model = advkit.load_model("smallcnn-fmnist")
    info = advkit.load_dataset("fmnist-mini").info
    runs = {
        "evaluation data": lambda: advkit.evaluate(model, (x, y), "none", quiet=True),
        "training data": lambda: advkit.train("smallcnn:width=4", advkit.plugin.ImageData(
            advkit.plugin.TensorImages(x, y), info), epochs=1, n_val=0, quiet=True),
        "attack 'fgsm'": lambda: advkit.create_attack("fgsm", model)(x, y),
        "explain": lambda: advkit.explain(model, x, y, "saliency"),
    }
    for where, run in runs.items():
        with pytest.raises(UserError) as e:
            run()
        assert str(e.value) == f"{where}: labels must lie in [0, 10), found -1, 10 at point(s) 2, 7", where


def test_create_attack_takes_a_spec_and_the_budget_of_the_models_dataset():
    model = advkit.load_model("smallcnn-fmnist")
    attack = advkit.create_attack("pgd:steps=5", model)
    assert attack.params["steps"] == 5 and attack.threat.eps == pytest.approx(0.1)  # fmnist's usual budget
    assert attack.threat.norm == "Linf"
    with pytest.raises(UserError, match="given twice"):
        advkit.create_attack("pgd:steps=5", model, steps=7)
    with pytest.raises(UserError, match="give eps= with norm=L2"):
        advkit.create_attack("pgd", model, norm="L2")
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.warns(UserWarning, match="names no dataset"):
        assert advkit.create_attack("fgsm", plain).threat.eps == pytest.approx(8 / 255)
    x, y = advkit.load_dataset("fmnist-mini").first(8).tensors()
    adv = attack(x, y)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6


def test_report_and_attack_print_briefly():
    report = advkit.evaluate(attacks="fgsm", n=20, quiet=True)
    r = repr(report)
    assert r.startswith("Report(model='smallcnn-fmnist', n=20") and "fgsm" in r and len(r) < 200
    assert str(report).startswith("# advkit eval: smallcnn-fmnist")
    a = repr(advkit.create_attack("pgd:steps=5", advkit.load_model("smallcnn-fmnist")))
    assert a == "Attack('pgd', Linf eps=0.1, model=smallcnn, steps=5)" or ("Conv2d" not in a and len(a) < 120), a


def test_report_header_names_the_weights_file(tmp_path):
    from safetensors.torch import save_file

    save_file(advkit.load_model("smallcnn", dataset="fmnist-mini").backbone.state_dict(), str(tmp_path / "w.safetensors"))
    r = cli("-q", "eval", "-m", "smallcnn", "--weights", tmp_path / "w.safetensors", "-a", "none", "-n", "10")
    assert f"weights {tmp_path / 'w.safetensors'}" in r.stdout


def test_no_points_left_says_why_when_nothing_was_classified_correctly():
    class Wrong(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((x.shape[0],), 9), 10).float() + 0 * x.sum()

    x, y = advkit.load_dataset("fmnist-mini").first(200).tensors()
    keep = y != 9
    report = advkit.evaluate(Wrong(), (x[keep][:20], y[keep][:20]), attacks="fgsm", eps=0.1, quiet=True)
    assert report.clean_accuracy == 0
    assert "no point was classified correctly, so this attack did not run" in str(report)


def test_own_module_from_the_working_directory_and_a_hint_when_missing(tmp_path):
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def mlp(num_classes=10, in_chans=1):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28 * in_chans, num_classes))\n")
    r = cli("-q", "eval", "-m", "mynets:mlp", "-a", "none", "-n", "10", cwd=tmp_path)
    assert "| clean |" in r.stdout
    r = cli("eval", "-m", "othernets:mlp", "-a", "none", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "put othernets.py in the working directory or its folder on PYTHONPATH" in r.stderr
    for spec, message in [("math:pi", "'math:pi' is a float, not an nn.Module"),
                          ("os:system", "building the model with system() failed: TypeError"),
                          ("smallcnn:width=-5", "width must lie in [1, 4096], got -5")]:
        r = cli("eval", "-m", spec, "-a", "none", cwd=tmp_path, check=False)
        assert r.returncode == 2 and message in r.stderr, (spec, r.stderr)
