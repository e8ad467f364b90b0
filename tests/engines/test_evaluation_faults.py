"""Bad models, bad data, failing attacks and interrupted runs: each gives one clear line or a documented warning."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import advkit
import advkit.plugin
from advkit._internal import plugins
from advkit._internal.errors import UserError
from advkit._internal.evaluation.engine import evaluate
from advkit._internal.stochastic import stochasticity


@pytest.fixture(scope="module")
def data(fmnist_test):
    return fmnist_test.first(24)


class NaNOn(nn.Module):
    """Returns NaN logits on the inputs whose first pixel is below ``below`` (all inputs by default)."""

    def __init__(self, model, points=None):
        super().__init__()
        self.model, self.points = model, points

    def forward(self, x):
        out = self.model(x)
        if self.points is None:
            return out * float("nan")
        mask = torch.zeros(len(x), 1, dtype=torch.bool)
        for i, xi in enumerate(x):
            mask[i] = any(torch.equal(xi, p) for p in self.points)
        return torch.where(mask, torch.full_like(out, float("inf")), out)


def test_nan_logits_on_clean_inputs_stop_the_run(trained_cnn, data):
    with pytest.raises(UserError, match=r"NaN or inf logits on clean inputs at 24 point\(s\): 0, 1, 2"):
        evaluate(NaNOn(trained_cnn).eval(), data, ["fgsm"], eps="0.1", quiet=True)


def test_nan_on_some_points_names_them_and_is_not_called_stochastic(trained_cnn, data):
    x = data.tensors()[0]
    model = NaNOn(trained_cnn, points=[x[3], x[17]]).eval()
    assert not stochasticity(model, x, 'nan', False)[0]
    with pytest.raises(UserError, match=r"clean inputs at 2 point\(s\): 3, 17$"):
        evaluate(model, data, ["fgsm"], eps="0.1", quiet=True)


class NaNFar(nn.Module):
    """Finite on the clean images, NaN on anything that moved away from them (adversarial inputs)."""

    def __init__(self, model, clean):
        super().__init__()
        self.model, self.clean = model, clean

    def forward(self, x):
        out = self.model(x)
        far = torch.tensor([min(float((xi - c).abs().max()) for c in self.clean) > 1e-3 for xi in x])
        return torch.where(far[:, None], torch.full_like(out, float("nan")), out)


def test_nan_logits_on_adversarial_inputs_stop_the_run(trained_cnn, data):
    x = data.tensors()[0]
    with pytest.raises(UserError, match=r"adversarial inputs of attack 'fgsm' at \d+ point"):
        evaluate(NaNFar(trained_cnn, x).eval(), data, ["fgsm"], eps="0.1", quiet=True)


@pytest.mark.parametrize("case, message", [
    ("nan-pixel", r"1 image\(s\) hold NaN or inf pixels \(points 5\)"),
    ("labels", r"labels must lie in \[0, 10\), found -1, 10 at point\(s\) 2, 7"),
    ("lengths", r"8 images but 7 labels"),
])
def test_bad_data_is_one_line(trained_cnn, case, message):
    x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    if case == "nan-pixel":
        x[5, 0, 3, 3] = float("nan")
    elif case == "labels":
        y[2], y[7] = -1, 10
    else:
        y = y[:7]
    with pytest.raises(UserError, match=message):
        evaluate(trained_cnn, (x, y), ["fgsm"], quiet=True)


@pytest.mark.parametrize("kw, message", [
    ({"n": 0}, r"-n must be positive, got 0"),
    ({"batch_size": 0}, r"--batch-size must be positive, got 0"),
    ({"eot": -1}, r"--eot must be positive"),
    ({"draws": 2.5}, r"--draws must be a whole number, got 2\.5"),
    ({"draws": 0}, r"--draws must be positive, got 0"),
])
def test_api_checks_counts_like_the_cli(trained_cnn, data, kw, message):
    with pytest.raises(UserError, match=message):
        evaluate(trained_cnn, data, ["fgsm"], quiet=True, **kw)


def test_n_larger_than_the_data_says_how_many(trained_cnn, data):
    with pytest.warns(UserWarning, match=r"-n 500 asks for more points than the data holds: evaluating all 24"):
        r = evaluate(trained_cnn, data, ["fgsm"], eps="0.1", n=500, quiet=True)
    assert r.n == 24 and any("evaluating all 24" in note for note in r.meta["notes"])


def test_float64_model_and_inputs_are_converted_and_said(trained_cnn, data):
    import copy

    model = copy.deepcopy(trained_cnn).double()
    x, y = data.tensors()
    with pytest.warns(UserWarning) as record:
        r = evaluate(model, (x.double(), y), ["fgsm", "pgd"], eps="0.1", quiet=True)
    said = " ".join(str(w.message) for w in record)
    assert "images are float64; converted to float32" in said and "parameters are float64; converted" in said
    ref = evaluate(trained_cnn, (x, y), ["fgsm", "pgd"], eps="0.1", quiet=True)
    assert r.clean_accuracy == ref.clean_accuracy and r.robust_accuracy == ref.robust_accuracy


def test_zero_gradients_warn_in_every_run(trained_cnn, data):
    class Detached(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(torch.round(x * 4) / 4)

    with pytest.warns(UserWarning, match=r"input gradients are all zero for 100% of the first 24 points"):
        evaluate(Detached(trained_cnn).eval(), data, ["fgsm"], eps="0.1", quiet=True)


class FailsAfter(nn.Module):
    """Raises in forward after ``ok`` calls."""

    def __init__(self, model, ok):
        super().__init__()
        self.model, self.ok, self.calls = model, ok, 0

    def forward(self, x):
        self.calls += 1
        if self.ok is not None and self.calls > self.ok:
            raise RuntimeError("cuda out of memory (simulated)")
        return self.model(x)


def test_model_that_raises_mid_run_stops_with_one_line_and_resumes(trained_cnn, data, tmp_path, capsys):
    kw = dict(eps="0.1", batch_size=8, quiet=True, out=tmp_path)
    # 7 calls before the batches: input-writing probe, classes, stochastic probe x2, batch probe x2, gradients
    model = FailsAfter(trained_cnn, ok=7).eval()
    with pytest.raises(UserError, match=r"^the model raised on batch 0 of clean \(points 0-7\): RuntimeError: "
                                        r"cuda out of memory \(simulated\); the finished batches are kept in"):
        evaluate(model, data, ["fgsm"], **kw)
    model.ok, model.calls = 9, 0  # now batches 0 and 1 of clean pass, batch 2 fails
    with pytest.raises(UserError, match=r"batch 2 of clean \(points 16-23\)"):
        evaluate(model, data, ["fgsm"], **kw)
    model.ok = None
    capsys.readouterr()
    r = evaluate(model, data, ["fgsm"], **kw)
    assert re.search(r"advkit: resumed 2 of \d+ batches", capsys.readouterr().err)
    assert r.clean_accuracy == evaluate(trained_cnn, data, ["fgsm"], eps="0.1", batch_size=8, quiet=True).clean_accuracy


@pytest.fixture(scope="module")
def raising_plugin():
    mod = types.ModuleType("advkit_test_raising")

    def explodes(model, threat, after: int = 1):
        calls = {"n": 0}

        def run(x, y):
            calls["n"] += 1
            if calls["n"] > after:
                raise ValueError("library bug")
            return x

        return run

    @advkit.plugin.hookimpl
    def advkit_register_attacks(register):
        register("explodes", explodes)

    mod.advkit_register_attacks = advkit_register_attacks
    plugins.register_plugin(mod)
    return mod


def test_attack_that_raises_names_it_and_the_batch(trained_cnn, data, raising_plugin, tmp_path):
    with pytest.raises(UserError, match=r"^attack 'explodes' raised on batch 1 of cascade:0:explodes "
                                        r"\(points \d+-\d+\): ValueError: library bug"):
        evaluate(trained_cnn, data, ["explodes"], eps="0.1", batch_size=8, quiet=True, out=tmp_path)
    log = (tmp_path / "progress.jsonl").read_text()
    assert '"stage": "cascade:0:explodes", "batch": 0' in log  # the finished batch is kept


def test_a_cut_progress_line_is_not_appended_onto(trained_cnn, data, tmp_path):
    kw = dict(eps="0.1", batch_size=8, quiet=True, out=tmp_path)
    evaluate(trained_cnn, data, ["fgsm"], **kw)
    path = tmp_path / "progress.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    evaluate(trained_cnn, data, ["fgsm"], **kw)
    evaluate(trained_cnn, data, ["fgsm"], **kw)  # the redone batch was logged on its own line: all resumed
    records = [json.loads(line) for line in path.read_text().splitlines()[len(lines):] if line.strip()]
    assert len(records) == 1 and records[0]["stage"] == json.loads(lines[-1])["stage"]


def test_resume_checks_the_library_versions(trained_cnn, data, tmp_path):
    kw = dict(eps="0.1", batch_size=8, quiet=True, out=tmp_path)
    evaluate(trained_cnn, data, ["fgsm"], **kw)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["versions"]["advkit"] and run["versions"]["torchattacks"]
    run["versions"]["torchattacks"] = "0.0.1"
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(UserError, match=r"holds a run with other settings \(versions\)"):
        evaluate(trained_cnn, data, ["fgsm"], **kw)


def test_cli_says_a_warning_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "advkit", "-q", "eval", "--eps", "8", "-n", "8", "--attacks", "fgsm"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("looks like a 0-255 value") == 1, r.stderr


def test_out_under_a_regular_file_is_one_line(trained_cnn, data, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"^cannot write to --out .*file/run"):
        evaluate(trained_cnn, data, ["fgsm"], eps="0.1", quiet=True, out=tmp_path / "file" / "run")


class CutGraph(nn.Module):
    """A hard threshold in front of the network: the outputs do not depend on the input through autograd."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x > 0.5).float())


def test_a_model_whose_graph_is_cut_gives_one_line_and_the_audit_flags_it(trained_cnn, data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the all-zero gradient warning
        with pytest.raises(UserError, match=r"^attack 'pgd' raised on batch 0 .*do not depend on its input through "
                                            r"autograd.*black-box attack"):
            evaluate(CutGraph(trained_cnn).eval(), data, ["pgd"], eps="0.1", quiet=True)
        r = evaluate(CutGraph(trained_cnn).eval(), data, ["square:n_queries=50"], eps="0.1", quiet=True,
                     audit="unavailable-gradients:n=10")
    assert not r.audit[0]["passed"] and r.audit[0]["remedy"] == "bpda"
