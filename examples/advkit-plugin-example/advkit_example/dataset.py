"""Dataset ``bars``: synthetic 1x16x16 images of a bar in one of four orientations, made on the fly.

Classes: horizontal, vertical, diagonal, anti-diagonal. Bar position,
brightness and background noise vary; each split is drawn from its own fixed
seed, so the data is the same on every machine and needs no download.
"""

from __future__ import annotations

CLASSES = ["horizontal", "vertical", "diagonal", "anti-diagonal"]
SIZE = 16


def _draw(n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    r = torch.arange(SIZE)
    rows, cols = r.view(-1, 1).expand(SIZE, SIZE), r.view(1, -1).expand(SIZE, SIZE)
    offset = torch.randint(-5, 6, (n, 1, 1), generator=g)
    masks = torch.stack([
        (rows - SIZE // 2 - offset[i]).abs() <= 1 if c == 0 else
        (cols - SIZE // 2 - offset[i]).abs() <= 1 if c == 1 else
        (rows - cols - offset[i]).abs() <= 1 if c == 2 else
        (rows + cols - SIZE + 1 - offset[i]).abs() <= 1
        for i, c in enumerate(labels.tolist())
    ]).float()
    level = 0.5 + 0.5 * torch.rand(n, 1, 1, generator=g)
    images = (masks * level + 0.15 * torch.rand(n, SIZE, SIZE, generator=g)).clamp(0, 1)
    return images.unsqueeze(1), labels


def bars(split: str, data_dir: str | None = None, n: int | None = None):
    """Synthetic 16x16 bars in 4 orientations (2,000 train / 400 test; N overrides the size); offline."""
    from advkit.plugin import DataInfo, ImageData, TensorImages

    size = n or (2000 if split == "train" else 400)
    images, labels = _draw(size, seed=0 if split == "train" else 1)
    info = DataInfo("bars", len(CLASSES), (1, SIZE, SIZE), mean=(0.2,), std=(0.29,), classes=list(CLASSES),
                    default_eps="0.1", source="advkit-plugin-example (synthetic)")
    return ImageData(TensorImages(images, labels), info)
