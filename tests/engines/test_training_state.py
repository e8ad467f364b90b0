"""The training state as one unit: kills at every write of an epoch's end, resume checks, --out holding a run."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import advkit._internal.checkpoint
import advkit._internal.files
from advkit._internal.cli import cli
from advkit._internal.data import load_dataset
from advkit._internal.errors import UserError
from advkit._internal.models import load_model
from advkit._internal.threat import ThreatModel
from advkit._internal.training.trainer import train

LINF = ThreatModel.parse("Linf", "0.1")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=32)


def smallcnn(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("smallcnn:width=8", num_classes=10, input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,))


KW = dict(epochs=2, batch_size=16, lr=0.05, threat=LINF, quiet=True, seed=5, augment=True, val_attack="none")


def _run(data, out, **kw):
    return train(smallcnn(seed=kw.pop("init", 0)), data, out=out, **{**KW, **kw})


class Kill:
    """Makes the k-th atomic write raise KeyboardInterrupt (a kill at that point); counts writes."""

    def __init__(self, at=None):
        self.at, self.calls, self.names = at, 0, []
        self.real = advkit._internal.files.atomic_write_bytes

    def __call__(self, path, data):
        self.calls += 1
        self.names.append(path.name if hasattr(path, "name") else str(path))
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt
        return self.real(path, data)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=0, atol=1e-6), k


def _history(out):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def quick_curves(monkeypatch):
    """curves.png stays one atomic write of its own, without drawing (the order of writes is under test here)."""
    from advkit._internal.training import records

    monkeypatch.setattr(records, "write_curves",
                        lambda out, history: advkit._internal.files.atomic_write_bytes(out / "curves.png", b"png"))


def test_a_kill_at_any_write_of_an_epoch_end_resumes_to_the_same_run(tmp_path, data, monkeypatch, quick_curves):
    counter = Kill()
    monkeypatch.setattr(advkit._internal.files, "atomic_write_bytes", counter)
    full = _run(data, tmp_path / "full")
    names = counter.names
    assert names[0] == "config.json" and names.count("train_state.safetensors") == 2
    first_commit = names.index("train_state.safetensors") + 1  # 1-based index of epoch 1's commit
    # every write of epoch 2's end (after epoch 1 committed), and the commit of epoch 1 itself
    cases = [first_commit] + list(range(first_commit + 2, len(names) + 1))
    for k in cases:
        out = tmp_path / f"kill{k}"
        monkeypatch.setattr(advkit._internal.files, "atomic_write_bytes", Kill(at=k))
        with pytest.raises(KeyboardInterrupt):
            _run(data, out)
        monkeypatch.setattr(advkit._internal.files, "atomic_write_bytes", counter.real)
        committed = (out / "train_state.safetensors").is_file()
        assert committed == (k > first_commit), names[k - 1]
        resumed = _run(data, out, init=7 if committed else 0, resume=committed, overwrite=not committed)
        _same(full.model, resumed.model)
        assert _history(out) == _history(tmp_path / "full"), names[k - 1]
        assert json.loads((out / "train_state.json").read_text())["epoch"] == 2
        assert json.loads((out / "last.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("change,named", [
    (dict(lr=0.01), "lr"), (dict(optimizer="sgd"), "optimizer"), (dict(lr=0.01, optimizer="sgd"), "lr, optimizer"),
    (dict(seed=6), "seed"), (dict(batch_size=8), "batch_size"), (dict(schedule="multistep"), "schedule"),
    (dict(epochs=3), "epochs"), (dict(defenses=["pgd-at:steps=1"]), "defenses"), (dict(n=24), "n_train"),
])
def test_resume_refuses_other_settings(tmp_path, data, change, named, quick_curves):
    _run(data, tmp_path, epochs=1)
    change = dict(change)
    run_data = data.first(change.pop("n")) if "n" in change else data
    with pytest.raises(UserError, match=rf"holds a run with other settings \({named}\)"):
        _run(run_data, tmp_path, **{**change, "epochs": change.get("epochs", 1)}, resume=True)


def test_resume_may_extend_a_constant_schedule(tmp_path, data, quick_curves):
    _run(data, tmp_path, epochs=1, schedule="constant")
    more = _run(data, tmp_path, epochs=2, schedule="constant", resume=True)
    full = _run(data, tmp_path / "full", epochs=2, schedule="constant")
    assert len(more.history) == 2
    _same(more.model, full.model)


def test_out_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path, data, quick_curves):
    _run(data, tmp_path, epochs=1)
    with pytest.raises(UserError, match=r"already holds a training run \(finished, 1 epochs\); pass --resume"):
        _run(data, tmp_path, epochs=1)
    with pytest.raises(UserError, match="pass one of them"):
        _run(data, tmp_path, epochs=1, resume=True, overwrite=True)
    (tmp_path / "tensorboard").mkdir()
    again = _run(data, tmp_path, epochs=1, lr=0.01, overwrite=True)
    assert not (tmp_path / "tensorboard").exists()
    assert _history(tmp_path)[0]["lr"] == 0.01 and len(again.history) == 1
    r = CliRunner().invoke(cli, ["-q", "train", "--epochs", "1", "--n-train", "32", "--n-val", "0", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "already holds a training run" in r.output and "--overwrite" in r.output


def test_out_that_cannot_hold_a_run(tmp_path, data):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to --out .*file.run: Not a directory"):
        _run(data, tmp_path / "file" / "run", epochs=1)


def test_resume_of_a_run_stopped_before_its_first_epoch_starts_it_again(tmp_path, data, quick_curves, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a kill during epoch 1 leaves
    with pytest.raises(UserError, match="already holds a training run .* pass --resume"):
        _run(data, out, epochs=1)
    resumed = _run(data, out, epochs=1, resume=True)
    assert "holds no finished epoch" in capsys.readouterr().err
    _same(resumed.model, _run(data, tmp_path / "full", epochs=1).model)
    with pytest.raises(UserError, match="nothing to resume"):
        _run(data, tmp_path / "empty", epochs=1, resume=True)
