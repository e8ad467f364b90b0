"""Inputs that used to be changed silently, or to end in a traceback: each is one line and exit 2 on the
command line, and the same :class:`UserError` in the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import advkit
from advkit._internal.errors import UserError


def cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "advkit", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def refused(r, words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("advkit: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert words in lines[0], lines[0]


@pytest.mark.parametrize("text, words", [
    ("epochs = 1.7\n", "epochs must be a whole number, got 1.7"),
    ("epochs = true\n", "epochs must be a whole number, got True"),
    ("augment = 3\n", "augment must be true or false, got 3"),
    ('config = "c.toml"\n', "a config file cannot name another one"),
    ("seed = -1\n", "seed must lie in [0, 2**64)"),
])
def test_config_values_of_the_wrong_type_are_refused(tmp_path, text, words):
    (tmp_path / "c.toml").write_text(text)
    refused(cli("-q", "train", "--config", tmp_path / "c.toml", "--out", tmp_path / "o"), words)


def test_unreadable_configs_are_one_line(tmp_path):
    (tmp_path / "b.toml").write_bytes(bytes(range(256)))
    refused(cli("train", "--config", tmp_path / "b.toml"), "cannot be read")
    (tmp_path / "y.yaml").write_text("a: [1, 2\nb: {c\n")
    pytest.importorskip("yaml")
    refused(cli("train", "--config", tmp_path / "y.yaml"), "cannot be read")


def test_eval_and_explain_refuse_what_they_used_to_drop_or_override(tmp_path):
    refused(cli("eval", "-a", "fgsm", "-n", "10", "--eps-sweep", ",,"), "--eps-sweep ',,': give budgets")
    refused(cli("explain", "--method", "ig:steps=5", "--opt", "steps=7", "-n", "2", "--out", tmp_path / "e"),
            "ig.steps is given twice with different values (5 and 7)")
    refused(cli("--seed", str(2**64), "eval", "-a", "none"), "seed must lie in [0, 2**64)")
    refused(cli("eval", "-a", "none", "--seed", "x"), "seed must be a whole number")


def test_report_refuses_a_damaged_report(tmp_path):
    run = tmp_path / "r"
    assert cli("-q", "eval", "-a", "none", "-n", "10", "--out", run).returncode == 0
    good = json.loads((run / "report.json").read_text())
    for key, value, words in [("clean_accuracy", "x", "'clean_accuracy' must be a finite number"),
                              ("robust_accuracy", 7, "'robust_accuracy' must be a fraction in [0, 1]"),
                              ("attacks", "pgd", "'attacks' must be a list of dicts")]:
        (run / "report.json").write_text(json.dumps({**good, key: value}))
        refused(cli("report", run), words)
    (run / "report.json").write_text("[" * 50_000 + "]" * 50_000)
    refused(cli("report", run), "nested too deeply")


def test_the_api_refuses_training_arguments_like_the_cli():
    for kwargs, words in [({"lr": "0.1"}, "--lr must be a number"), ({"epochs": 1.7}, "--epochs must be a whole"),
                          ({"epochs": True}, "--epochs must be a whole"), ({"n_val": -1}, "--n-val must be"),
                          ({"augment": "yes"}, "--augment is a flag")]:
        with pytest.raises(UserError, match=words.replace("[", r"\[")):
            advkit.train("smallcnn:width=4", **{"epochs": 1, "n_train": 32, "n_val": 0, "quiet": True, **kwargs})


def test_csa_bank_refuses_a_zero_batch_size(tmp_path):
    refused(cli("csa-bank", "--batch-size", "0", "--per-class", "1", "--out", tmp_path / "b"), "--batch-size must be >= 1")


def test_the_api_refuses_with_the_clis_words():
    model = advkit.load_model("smallcnn-fmnist")
    x, y = advkit.load_dataset("fmnist-mini").first(8).tensors()
    cases = [
        (lambda: advkit.evaluate(model, (x, y), attacks=[123]), "expected names, got int"),
        (lambda: advkit.evaluate(model, (x, y), attacks="fgsm", attack_opts={"fgsm": 5}), "must be a mapping"),
        (lambda: advkit.evaluate(model, (x, y), attacks="fgsm", eps=[0.1]), "eps"),
        (lambda: advkit.evaluate(model, (x * 255, y), attacks="fgsm"), "0-255 values"),
        (lambda: advkit.evaluate(model, (x, y), attacks="fgsm", batch_size=0), "--batch-size must be positive"),
    ]
    for call, words in cases:
        with pytest.raises(UserError) as info:
            call()
        assert words in str(info.value), (words, str(info.value))
    attack = advkit.create_attack("fgsm", model)
    with pytest.raises(UserError, match="labels"):
        attack(x, torch.full_like(y, 12))


class _Tuple(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10], None


class _OneRow(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(1, 10) + 0 * x.sum()


class _IntLogits(torch.nn.Module):
    def forward(self, x):
        return (x.flatten(1)[:, :10] * 100).long()


class _OddBatches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        if x.shape[0] not in (1, 2, 8):
            raise RuntimeError(f"cannot take a batch of {x.shape[0]}")
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("model, words", [
    (_Tuple(), "returned tuple for 2 images"),
    (_OneRow(), "returned float32 of shape (1, 10) for 2 images"),
    (_IntLogits(), "returned int64 of shape (2, 10)"),
    (_OddBatches(), "raised on a batch of 4 image(s)"),
])
def test_models_with_the_wrong_output_are_named(model, words):
    x, y = advkit.load_dataset("fmnist-mini").first(8).tensors()
    with pytest.raises(UserError) as info:
        advkit.evaluate(model, (x, y), attacks="fgsm", eps=0.1, batch_size=8, quiet=True)
    assert words in str(info.value), str(info.value)


def test_data_and_parameters_in_other_forms():
    x, y = advkit.load_dataset("fmnist-mini").first(8).tensors()
    as_numpy = advkit.evaluate(None, (x.numpy(), y.numpy()), attacks="fgsm", quiet=True)
    as_tensors = advkit.evaluate(None, (x, y), attacks="fgsm", quiet=True)
    assert as_numpy.robust_accuracy == as_tensors.robust_accuracy
    for call, words in [
        (lambda: advkit.evaluate(None, (None, None), attacks="fgsm"), "an (images, labels) pair"),
        (lambda: advkit.evaluate(None, 42, attacks="fgsm"), "got int"),
        (lambda: advkit.create_attack("pgd", advkit.load_model(), steps=2.7), "pgd.steps: expected an integer, got 2.7"),
        (lambda: advkit.load_model("smallcnn", num_classes=-3), "num_classes must lie in [1, 100000]"),
        (lambda: advkit.load_dataset("imagefolder:root=.,size=-3"), "size must lie in [0, 8192], got -3"),
        (lambda: advkit.evaluate(None, None, attacks="fgsm", n=8, device="cuda")
         if not torch.cuda.is_available() else (_ for _ in ()).throw(UserError("no CUDA device")), "no CUDA device"),
    ]:
        with pytest.raises(UserError) as info:
            call()
        assert words in str(info.value), (words, str(info.value))


def test_a_string_of_defenses_is_a_list_of_specs():
    result = advkit.train("smallcnn:width=4", defenses="label-smoothing:smoothing=0.2", epochs=1, n_train=16,
                          n_val=0, quiet=True)
    assert result.defenses == ["label-smoothing"]
    with pytest.raises(UserError, match="unknown defense 'tradez'; did you mean 'trades'"):
        advkit.train("smallcnn:width=4", defenses="tradez", epochs=1, n_train=16, n_val=0, quiet=True)


def test_a_full_disk_during_an_evaluation_is_one_line(tmp_path, monkeypatch):
    import errno

    from advkit._internal.evaluation import runner

    def full_disk_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("progress.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runner, "open", full_disk_open, raising=False)  # the engine's progress log only
    with pytest.raises(UserError, match="cannot write .*progress.jsonl: No space left on device; the finished"):
        advkit.evaluate(attacks="fgsm", n=8, out=tmp_path / "o", quiet=True)
