"""The engines do not trust what a plugin, a model or another process does to a run.

- the threat model belongs to the run: an attack parameter can never redefine it;
- two runs on one --out: the second refuses (real processes started together);
- an attack that leaves the model in training mode or changes its weights, a model
  that writes into its input, uses batch statistics or falsely declares itself random;
- an image folder with a symlink loop counts each file once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import advkit
import advkit.plugin
from advkit._internal import plugins
from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.evaluation.engine import evaluate

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "advkit", "-q", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


@pytest.fixture
def data(fmnist_test):
    return fmnist_test.first(24)


# -- 1. the threat model belongs to the run -------------------------------------------------------------------------

@pytest.mark.parametrize("args, word", [
    (["-a", "fgsm:eps=0.5"], "eps"),
    (["-a", "pgd:norm=L2,eps=3"], "norm"),
    (["-a", "fgsm", "--attack-opt", "fgsm.eps=1"], "eps"),
    (["-a", "pgd:bounds=2"], "bounds"),
])
def test_attack_parameters_cannot_redefine_the_threat_model_cli(args, word, tmp_path):
    r = cli("eval", *args, "-n", "8", "--out", tmp_path / "run")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "belongs to the run's threat model, not to an attack" in r.stderr
    if word != "bounds":
        assert "--eps" in r.stderr or "--norm" in r.stderr
    assert not (tmp_path / "run" / "progress.jsonl").exists()


def test_validation_attack_cannot_redefine_the_threat_model(tmp_path):
    r = cli("train", "--model", "smallcnn:width=8", "--epochs", "1", "--n-train", "64", "--n-val", "16",
            "--val-attack", "fgsm:eps=0.9", "--out", tmp_path / "t")
    assert r.returncode == 2 and "eps belongs to the run's threat model" in r.stderr, r.stderr


def test_attack_parameters_cannot_redefine_the_threat_model_api(trained_cnn, data):
    with pytest.raises(UserError, match="eps belongs to the run's threat model.*eps= in the Python API"):
        evaluate(trained_cnn, data, ["fgsm"], eps="0.1", attack_opts={"fgsm": {"eps": 0.5}}, quiet=True)
    with pytest.raises(UserError, match="norm belongs to the run's threat model"):
        advkit.create_attack("pgd", trained_cnn, advkit.ThreatModel(), norm="L2")
    # the API's own budget is the threat model, and the output is verified against it
    atk = advkit.create_attack("fgsm", trained_cnn, eps=0.05)
    x, y = data.tensors()
    assert float((atk(x, y) - x).abs().amax()) <= 0.05 + 1e-6


def test_an_attack_factory_may_not_take_the_budget():
    with pytest.raises(TypeError, match="an attack factory may not take 'eps'"):
        plugins._entry("attack", plugins.PluginInfo("p", "p", "", ""), "x", lambda model, threat, eps=0.1: None)


@pytest.mark.parametrize("name, factory, aliases, message", [
    ("", lambda model, threat: None, (), "must be a non-empty word"),
    ("ok", 3, (), "must be callable"),
    ("ok", lambda model, threat: None, "xyz", "aliases must be a tuple"),
    ("a b", lambda model, threat: None, (), "must be a non-empty word"),
])
def test_registration_refuses_bad_names_and_factories(name, factory, aliases, message):
    with pytest.raises(TypeError, match=message):
        plugins._entry("attack", plugins.PluginInfo("p", "p", "", ""), name, factory, aliases=aliases)


# -- 2. one run per --out ---------------------------------------------------------------------------------------------

def _together(*commands):
    procs = [subprocess.Popen([sys.executable, "-m", "advkit", "-q", *map(str, c)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for c in commands]
    return [(p.wait(timeout=600), p.stderr.read()) for p in procs]


@pytest.mark.slow
def test_two_evaluations_on_one_out_never_mix(tmp_path):
    """Started together, one of two runs with different budgets refuses; the folder holds the other's run."""
    for k in range(4):
        out = tmp_path / f"run{k}"
        args = ["eval", "-a", "fgsm", "-n", "40", "--batch-size", "8", "--out", out]
        results = _together([*args, "--eps", "0.1"], [*args, "--eps", "0.02"])
        codes = sorted(rc for rc, _ in results)
        assert codes == [0, 2], results
        refused = next(err for rc, err in results if rc == 2)
        assert "is in use by another advkit run" in refused or "holds a run with other settings" in refused
        eps = json.loads((out / "run.json").read_text())["threat"]["eps"]
        records = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
        keys = [(r["stage"], r["batch"]) for r in records]
        assert len(keys) == len(set(keys))  # one run's records only
        rerun = cli("eval", "-a", "fgsm", "-n", "40", "--batch-size", "8", "--out", out, "--eps", str(eps))
        fresh = cli("eval", "-a", "fgsm", "-n", "40", "--batch-size", "8", "--eps", str(eps))
        table = lambda text: [ln.rsplit("|", 2)[0] for ln in text.splitlines() if ln.startswith("|")]  # noqa: E731
        assert rerun.returncode == 0 and table(rerun.stdout) == table(fresh.stdout)


@pytest.mark.slow
def test_two_trainings_on_one_out_refuse(tmp_path):
    for k in range(2):
        out = tmp_path / f"t{k}"
        args = ["train", "--model", "smallcnn:width=8", "--epochs", "1", "--n-train", "256", "--n-val", "32",
                "--val-attack", "none", "--out", out]
        results = _together([*args, "--lr", "0.05"], [*args, "--lr", "0.01"])
        assert sorted(rc for rc, _ in results) == [0, 2], results
        refused = next(err for rc, err in results if rc == 2)
        assert "is in use by another advkit run" in refused or "already holds a training run" in refused


def test_lock_is_released_and_reentrant(tmp_path):
    from advkit._internal.files import lock_output

    with lock_output(tmp_path / "o") as a, lock_output(tmp_path / "o") as b:
        assert a is b
    code = "from advkit._internal.files import lock_output; lock_output(%r); print('ok')" % str(tmp_path / "o")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


# -- 3. plugins and models that misbehave ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rogue_attacks():
    mod = types.ModuleType("advkit_test_rogue")

    def trains(model, threat):
        def run(x, y):
            model.train()
            return x
        return run

    def tampers(model, threat):
        def run(x, y):
            with torch.no_grad():
                next(model.parameters()).add_(0.01)
            return x
        return run

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        register("rogue-trains", trains)
        register("rogue-tampers", tampers)

    mod.advkit_register_attacks = advkit_register_attacks
    plugins.register_plugin(mod)
    return mod


class Dropout(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.drop = model, nn.Dropout(0.9)

    def forward(self, x):
        return self.drop(self.model(x))


def test_attack_leaving_training_mode_is_undone_and_said(trained_cnn, data, rogue_attacks):
    with pytest.warns(UserWarning, match="put the model in training mode"):
        r = evaluate(Dropout(trained_cnn).eval(), data, ["rogue-trains"], eps="0.1", batch_size=8, quiet=True)
    assert r.robust_accuracy == r.clean_accuracy  # the input came back unchanged: nothing is broken
    assert any("switched it back to eval mode" in n for n in r.meta["notes"])


def test_attack_changing_the_weights_stops_the_run(trained_cnn, data, rogue_attacks):
    model = Dropout(trained_cnn).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ThreatViolation, match="attack 'rogue-tampers' .* changed the model's weights or buffers"):
        evaluate(model, data, ["rogue-tampers"], eps="0.1", quiet=True)
    for k, v in before.items():  # restore the shared fixture
        model.state_dict()[k].copy_(v)


class WritesInput(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.mul_(0.5))


def test_model_writing_into_its_input_is_named_and_data_untouched(trained_cnn, data):
    x, y = data.tensors()
    kept = x.clone()
    with pytest.raises(UserError, match="model 'WritesInput' writes into its input tensor"):
        evaluate(WritesInput(trained_cnn).eval(), (x, y), ["fgsm"], eps="0.1", quiet=True)
    assert torch.equal(x, kept)


class BatchStats(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x - x.mean(0, keepdim=True)) * 2 + 0.5)


def test_batch_dependent_model_is_warned_about(trained_cnn, data):
    with pytest.warns(UserWarning, match="depend on the other points of its batch"):
        r = evaluate(BatchStats(trained_cnn).eval(), data, ["ta.vanila"], eps="0.1", quiet=True)
    assert any("batch statistics" in n for n in r.meta["notes"])


def test_declared_stochastic_deterministic_model_is_probed(trained_cnn, data):
    trained_cnn.info["stochastic"] = True  # what a checkpoint sidecar saying "stochastic": true gives
    try:
        with pytest.warns(UserWarning, match="declared stochastic, but 4 forward passes .* agree"):
            r = evaluate(trained_cnn, data, ["fgsm"], eps="0.1", quiet=True)
    finally:
        trained_cnn.info.pop("stochastic")
    assert r.meta["stochastic"] is False and not r.meta["adaptive"]


# -- 4. image folders ---------------------------------------------------------------------------------------------

def test_symlink_loop_counts_each_image_once(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * i, 90, 7)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "loop").symlink_to("..")  # cat/loop/cat/loop/... and cat/loop/dog
    (tmp_path / "dog" / "again").symlink_to(tmp_path / "dog")
    (tmp_path / "dog" / "twin.png").symlink_to(tmp_path / "dog" / "0.png")
    data = advkit.load_dataset(f"imagefolder:root={tmp_path}", "test")
    x, y = data.tensors()
    assert len(data) == 4 and y.tolist() == [0, 0, 1, 1]
