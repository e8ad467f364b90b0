"""Tampered checkpoint sidecars and training states: one clear error before anything is built from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import advkit
from advkit._internal.errors import UserError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    advkit.save_checkpoint(advkit.load_model("smallcnn:width=8", dataset="fmnist-mini"), path)
    return path


def _tamper(checkpoint, tmp_path, change) -> str:
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    change(meta)
    out = tmp_path / "t.safetensors"
    out.write_bytes(checkpoint.read_bytes())
    out.with_suffix(".json").write_text(json.dumps(meta))
    return str(out)


def _set(key, value):
    return lambda meta: meta.__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (_set("num_classes", 10**12), "field 'num_classes' must be a whole number in [1, 100000]"),
    (_set("num_classes", -1), "field 'num_classes' must be a whole number in [1, 100000]"),
    (_set("num_classes", True), "field 'num_classes'"),
    (_set("input_shape", [1, 28, 10**9]), "field 'input_shape' must be a whole number in [1, 8192]"),
    (_set("input_shape", [-1, 28, 28]), "field 'input_shape' must be a whole number in [1, 64]"),
    (_set("input_shape", "1x28x28"), "field 'input_shape' must be a list of ints"),
    (_set("mean", ["a"]), "field 'mean' must be a list of"),
    (_set("std", [0.0]), "field 'std' must be a positive finite number"),
    (_set("std", [1.0, 2.0]), "field 'std' must be 1 or 1 numbers"),
    (_set("defenses", "lwta"), "field 'defenses' must be a list of dicts"),
    (_set("defenses", [{"params": {}}]), "field 'name' must be a non-empty string"),
    (_set("arch", ""), "field 'arch' must be a non-empty string"),
    (_set("defenses", [{"name": "noise-injection", "params": {"alpha": 1e308}}]), "alpha must lie in [0, 100]"),
    (lambda m: m.pop("arch"), "field 'arch' must be a non-empty string"),
    (lambda m: m.setdefault("arch_params", {}).__setitem__("width", 10**9), "width must lie in [1, 4096]"),
])
def test_a_tampered_sidecar_is_one_clear_error(checkpoint, tmp_path, change, message):
    path = _tamper(checkpoint, tmp_path, change)
    with pytest.raises(UserError, match=None) as info:
        advkit.load_model(path)
    assert message in str(info.value), str(info.value)


def test_a_deep_or_huge_sidecar_is_refused(checkpoint, tmp_path):
    out = tmp_path / "d.safetensors"
    out.write_bytes(checkpoint.read_bytes())
    out.with_suffix(".json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested too deeply"):
        advkit.load_model(str(out))
    out.with_suffix(".json").write_text("{}" + " " * (17 * 2**20))
    with pytest.raises(UserError, match="too large"):
        advkit.load_model(str(out))


def test_the_cli_says_it_in_one_line(checkpoint, tmp_path):
    path = _tamper(checkpoint, tmp_path, _set("num_classes", 10**12))
    r = subprocess.run([sys.executable, "-m", "advkit", "eval", "-m", path, "-a", "none"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "num_classes" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "t"
    advkit.train("smallcnn:width=4", epochs=2, n_train=64, n_val=0, quiet=True, out=out, schedule="constant")
    return out


@pytest.mark.parametrize("key, value, message", [
    ("epoch", "abc", "field 'epoch' must be a whole number"),
    ("epoch", -5, "field 'epoch' must be a whole number in [0,"),
    ("history", "garbage", "field 'history' must be a list of dicts"),
    ("history", [{}], "field 'history' must be one record per finished epoch (2)"),
])
def test_a_tampered_training_state_is_refused_before_resuming(trained, tmp_path, key, value, message):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "t"
    shutil.copytree(trained, out)
    path = out / "train_state.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["meta"])
    meta[key] = value
    save_file(tensors, str(path), metadata={**header, "meta": json.dumps(meta)})
    with pytest.raises(UserError) as info:
        advkit.train("smallcnn:width=4", epochs=3, n_train=64, n_val=0, quiet=True, out=out, resume=True,
                     schedule="constant")
    assert message in str(info.value), str(info.value)


def test_a_killed_writers_temporary_file_goes_at_the_next_write(tmp_path):
    from advkit._internal.files import atomic_write_json

    target = tmp_path / "report.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".report.json.{dead.stdout.strip()}.abc123.tmp"
    stale.write_text("half a report")
    live = tmp_path / f".report.json.{os.getppid()}.def456.tmp"  # a writer still running
    live.write_text("in progress")
    other = tmp_path / f".other.json.{dead.stdout.strip()}.x.tmp"
    other.write_text("another file's")
    atomic_write_json(target, {"ok": 1})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert not stale.exists() and live.exists() and other.exists()


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from advkit._internal import files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(UserError, match="cannot write .*x.json: No space left on device"):
        files.atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
