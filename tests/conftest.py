"""Shared fixtures: offline settings, the embedded data, and a model trained on it in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

# One thread per pytest-xdist worker (the workers share the cores); up to two threads otherwise.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture(scope="session")
def fmnist_test():
    from advkit._internal.data import load_dataset

    return load_dataset("fmnist-mini", "test")


@pytest.fixture(scope="session")
def fmnist_train():
    from advkit._internal.data import load_dataset

    return load_dataset("fmnist-mini", "train")


@pytest.fixture(scope="session")
def trained_cnn(fmnist_train):
    """A SmallCNN trained for one quick epoch on 4,000 embedded images (~85% test accuracy)."""
    import torch.nn.functional as F

    from advkit._internal.models import load_model

    torch.manual_seed(0)
    info = fmnist_train.info
    model = load_model("smallcnn:width=64", num_classes=10, input_shape=info.input_shape, mean=info.mean, std=info.std)
    x, y = fmnist_train.tensors()
    x, y = x[:4000], y[:4000]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _epoch in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def single_thread():
    """Small models on a shared 2-core CPU train fastest single-threaded (for a whole module)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def kill_at():
    """``kill_at(k, args)``: run ``python -m advkit ARGS`` SIGKILLed in the middle of its ``k``-th write
    (tests/fixtures/kill_at_write.py); returns True if it was killed, False if it finished first."""
    import subprocess
    import sys
    from pathlib import Path

    harness = Path(__file__).parent / "fixtures" / "kill_at_write.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def run(k: int, args) -> bool:
        proc = subprocess.run([sys.executable, str(harness), str(k), *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode in (0, -9), proc.stderr[-2000:]
        return proc.returncode == -9

    return run


@pytest.fixture
def advkit_cli(single_thread):
    """Run the CLI in this process (one thread, like the killed runs); fails on a non-zero exit."""
    from click.testing import CliRunner

    from advkit._internal.cli import load_commands

    cli = load_commands()

    def run(args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r

    return run
