"""SIGKILL inside each write of an evaluation and of a training run, then the same command: the same result."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
import torch


def _rows(path):
    return list(csv.DictReader(path.open()))


def _each_kill(tmp_path, kill_at, advkit_cli, args, same, resume=lambda out: [], writes=None) -> int:
    """For k in ``writes`` (default 1, 2, ... until a run finishes): a run killed inside its k-th write, then the
    same command (plus ``resume(out)``) to the end; ``same(out)`` compares with the uninterrupted run."""
    done = 0
    for k in writes or itertools.count(1):
        out = tmp_path / f"kill{k}"
        if not kill_at(k, [*args, "--out", out]):
            assert writes is None, f"the run finished before its write {k}"
            return done
        advkit_cli([*args, *resume(out), "--out", out])
        same(out)
        done += 1
    return done


@pytest.mark.slow
def test_eval_killed_in_each_write_resumes_to_the_uninterrupted_result(tmp_path, kill_at, advkit_cli):
    args = ["--seed", "3", "-q", "eval", "--model", "smallcnn-fmnist", "--attacks", "pgd", "-n", "24",
            "--batch-size", "12", "--attack-opt", "pgd.steps=3"]
    advkit_cli([*args, "--out", tmp_path / "ref"])
    ref = json.loads((tmp_path / "ref" / "report.json").read_text())

    def same(out):
        assert _rows(out / "results.csv") == _rows(tmp_path / "ref" / "results.csv")
        got = json.loads((out / "report.json").read_text())
        assert [(a["name"], a["accuracy"]) for a in got["attacks"]] == [(a["name"], a["accuracy"]) for a in ref["attacks"]]

    assert _each_kill(tmp_path, kill_at, advkit_cli, args, same) >= 7  # run.json, 2 batches x 2 stages, reports


@pytest.mark.slow
def test_training_killed_inside_its_writes_resumes_to_the_uninterrupted_weights(tmp_path, kill_at, advkit_cli):
    from advkit._internal.checkpoint import load_tensors

    args = ["--seed", "1", "-q", "train", "--model", "smallcnn:width=8", "--dataset", "fmnist-mini", "--n-train", "64",
            "--epochs", "2", "--batch-size", "32", "--n-val", "32", "--val-attack", "none", "--eps", "0.1",
            "--defense", "pgd-at:steps=1,step_size=0.1"]
    advkit_cli([*args, "--out", tmp_path / "ref"])
    ref = load_tensors(tmp_path / "ref" / "last.safetensors")

    def same(out):
        got = load_tensors(out / "last.safetensors")
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
        assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    def resume(out):  # what advkit asks the user to add once the folder holds a run (even one with no epoch done)
        return ["--resume"] if (out / "config.json").exists() else []

    # Its 17 writes: config.json, then per epoch last, best (epoch 1), metrics, curves, the training state (the
    # commit) and its readable copy. Killed inside the config, an uncommitted epoch 1, epoch 1's commit and the
    # write after it, epoch 2's first writes, its commit and the last write (every write: test_training_state.py).
    assert _each_kill(tmp_path, kill_at, advkit_cli, args, same, resume, writes=[1, 2, 9, 10, 11, 13, 16, 17]) == 8
