"""Shared fixtures: offline settings, the embedded data, and a model trained on it in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def fmnist_test():
    from advkit.data import load_dataset

    return load_dataset("fmnist-mini", "test")


@pytest.fixture(scope="session")
def fmnist_train():
    from advkit.data import load_dataset

    return load_dataset("fmnist-mini", "train")


@pytest.fixture(scope="session")
def trained_cnn(fmnist_train):
    """A SmallCNN trained for one quick epoch on 4,000 embedded images (~85% test accuracy)."""
    import torch.nn.functional as F

    from advkit.models import load_model

    torch.manual_seed(0)
    info = fmnist_train.info
    model = load_model("smallcnn:width=64", num_classes=10, input_shape=info.input_shape, mean=info.mean, std=info.std)
    x, y = fmnist_train.tensors()
    x, y = x[:4000], y[:4000]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for epoch in range(2):
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
