"""Stochastic LWTA: the block against hand computations, and the activations the module swap cannot reach."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit._internal.defense import create_defense
from advkit._internal.errors import UserError
from advkit._internal.models import load_model

pytestmark = pytest.mark.usefixtures("single_thread")


class FunctionalNet(nn.Module):
    """A conv net that calls its activations as functions: nothing for the module swap to reach."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))  # functional
        return self.fc(x.mean((2, 3)))


class MixedNet(nn.Module):
    """One activation module, one functional call inside a block, one tensor method."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()  # a module: replaced

        def forward(self, x):
            return self.relu(self.conv(x)) + x.relu()  # x.relu(): out of reach

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.block = MixedNet.Block()
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def test_functional_only_backbone_is_refused_with_the_reason():
    with pytest.raises(UserError, match=r"no ReLU-family activation modules.*FunctionalNet.forward calls relu"):
        create_defense("lwta").transform_model(FunctionalNet())


def test_functional_activation_beside_modules_warns_and_names_it():
    net = MixedNet()
    with pytest.warns(UserWarning, match=r"replaced 2 activation modules.*block \(Block.forward calls relu\)"):
        create_defense("lwta").transform_model(net)
    assert type(net.block.relu).__name__ == "LWTA" and type(net.stem[1]).__name__ == "LWTA"


@pytest.mark.parametrize("spec, shape", [("smallcnn", (1, 28, 28)), ("resnet18-cifar:width=8", (3, 32, 32)),
                                         ("timm/resnet10t", (3, 32, 32))])
def test_module_only_backbones_do_not_warn(spec, shape):
    m = load_model(spec, num_classes=10, input_shape=shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_defense("lwta").transform_model(m.backbone)


def test_functional_attribute_is_found():
    from advkit_lwta.transform import functional_activations

    found = functional_activations(nn.Sequential(nn.TransformerEncoderLayer(8, 2, activation=F.relu)))
    assert found and "holds activation" in found[0]
    assert functional_activations(nn.Sequential(nn.TransformerEncoderLayer(8, 2, activation=nn.ReLU()))) == []


def test_deterministic_block_keeps_the_block_maximum():
    from advkit_lwta.block import LWTA

    torch.manual_seed(0)
    x = torch.randn(3, 6, 2, 2)
    out = LWTA(U=3, deterministic=True).eval()(x)
    # by hand: channels (0,1,2) and (3,4,5) compete at each location; the largest passes, the rest are 0
    ref = torch.zeros_like(x)
    for n in range(3):
        for b in range(2):
            for i in range(2):
                for j in range(2):
                    block = x[n, 3 * b : 3 * b + 3, i, j]
                    k = int(block.argmax())
                    ref[n, 3 * b + k, i, j] = block[k]
    assert torch.equal(out, ref)


def test_stochastic_winner_follows_the_softmax_of_the_block():
    from advkit_lwta.block import LWTA

    torch.manual_seed(0)
    values = torch.tensor([0.0, 1.0, 2.0])
    x = values.view(1, 3, 1).expand(20000, 3, 1).contiguous() + 10.0  # shift: all winners are non-zero
    out = LWTA(U=3).train()(x)
    assert ((out != 0).sum(1) == 1).all()  # exactly one winner per block
    freq = (out[:, :, 0] != 0).float().mean(0)
    assert torch.allclose(freq, torch.softmax(values, 0), atol=0.015)  # P(winner = u) = softmax(h)_u
    kept = out.sum(1)[:, 0]
    assert set(torch.unique(kept).tolist()) <= {10.0, 11.0, 12.0}  # the winner passes its own value
