"""Backbone ``tinynet``: two convolutions and a linear layer, for inputs of any size.

advkit calls the factory with the keyword arguments it accepts among
``num_classes``, ``in_chans``, ``input_shape`` and the run's context
(``dataset``, ``norm``), and puts the returned ``nn.Module`` behind the
dataset's normalization.
"""

from __future__ import annotations

from advkit.plugin import UserError


def tinynet(num_classes: int = 10, in_chans: int = 1, input_shape: tuple = (1, 28, 28), width: int = 16):
    """Two 3x3 convolutions (WIDTH, 2*WIDTH channels), global average pooling, one linear layer."""
    from torch import nn

    if min(input_shape[1:]) < 4:
        raise UserError(f"tinynet needs images of at least 4x4 pixels, got {tuple(input_shape)}")
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
