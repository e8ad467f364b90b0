"""Fixtures shared by the CSA tests: a tiny 8x8 network and a forward-pass counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def tiny(fmnist_train):
    """8x8 Fashion-MNIST images and a tiny CNN trained on them for a few seconds (one thread)."""
    from advkit._internal.data import DataInfo, ImageData, TensorImages

    x, y = fmnist_train.tensors()
    x8 = F.interpolate(x[:2000], size=(8, 8), mode="area")
    y = y[:2000]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10),
        )
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        for _ in range(60):
            i = torch.randint(0, 2000, (64,))
            opt.zero_grad()
            F.cross_entropy(net(x8[i]), y[i]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    info = DataInfo("tiny-fmnist8", 10, (1, 8, 8), (0.5,), (0.5,), split="train")
    return net, x8[:4], y[:4], ImageData(TensorImages(x8[:300], y[:300]), info)


class Counting(torch.nn.Module):
    """Counts forward passes; raises after ``limit`` of them (a simulated interruption)."""

    def __init__(self, net, limit=None):
        super().__init__()
        self.net, self.calls, self.limit = net, 0, limit

    def forward(self, x):
        if self.limit is not None and self.calls + x.shape[0] > self.limit:
            raise RuntimeError("interrupted")
        self.calls += x.shape[0]
        return self.net(x)


@pytest.fixture
def counting():
    """The :class:`Counting` wrapper: ``counting(net, limit=None)``."""
    return Counting
