"""Batches and augmentation for the training engine (our own code: batched on the device).

The data order of an epoch is a permutation drawn from ``(seed, epoch)``; each
global batch is split among the ranks under torchrun. Augmentation is a random
crop with zero padding plus a horizontal flip for colour images (32x32: padding
4), and a crop with padding 2 and no flip for grey ones (28x28: a flip changes
digits and letters). Crop offsets and flips are drawn for the whole global
batch from the step's generator, so a rank's share is that of a single process.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from advkit.runtime import derive_seed, generator


def in_memory(data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels of an in-memory dataset (TensorImages, possibly a subset), else None."""
    from advkit.data import TensorImages

    base = getattr(data, "base", None)
    if isinstance(base, TensorImages) and base.transform is None:
        if data.indices is None:
            return base.images, base.labels
        idx = torch.as_tensor(data.indices, dtype=torch.long)
        return base.images[idx], base.labels[idx]
    return None


class Batches:
    """Batches of a dataset by index; the whole set lives on the device when it is in memory."""

    def __init__(self, data, device: torch.device, workers: int = 0):
        self.data = data
        self.device = device
        tensors = in_memory(data)
        self.x = self.y = None
        if tensors is not None:
            self.x = tensors[0].to(device, torch.float32)
            self.y = tensors[1].to(device, torch.long)
        self.workers = workers

    def __len__(self) -> int:
        return len(self.data)

    def iterate(self, index_batches: list[torch.Tensor]):
        """``(indices, x, y)`` on the device for each batch of dataset indices."""
        if self.x is not None:
            for idx in index_batches:
                d = idx.to(self.device)
                yield d, self.x[d], self.y[d]
            return
        loader = torch.utils.data.DataLoader(
            self.data, batch_sampler=[i.tolist() for i in index_batches], num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        for idx, (x, y) in zip(index_batches, loader):
            yield idx.to(self.device), x.to(self.device, torch.float32), torch.as_tensor(y).to(self.device, torch.long)

    def all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole dataset as two tensors on the device."""
        if self.x is not None:
            return self.x, self.y
        xs, ys = zip(*(self.data[i] for i in range(len(self.data))))
        return torch.stack(xs).to(self.device), torch.as_tensor(ys).to(self.device)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """This rank's index batches for one epoch: a permutation from ``(seed, epoch)``, split by batch then rank."""
    perm = torch.randperm(n, generator=generator(torch.device("cpu"), derive_seed(seed, "order", epoch)))
    out = []
    for start in range(0, n, batch_size):
        b = perm[start:start + batch_size]
        if world > 1:
            if b.numel() < world:
                break
            b = b[rank::world]
        out.append(b)
    return out


def augmentation_for(shape) -> tuple[int, bool]:
    """``(crop padding, flip)`` for images of ``shape``: colour 32x32 -> (4, True), grey 28x28 -> (2, False)."""
    c, h = int(shape[0]), int(shape[1])
    if c == 3:
        return max(1, round(h / 8)), True
    return max(1, round(h / 14)), False


def draw_augmentation(n: int, pad: int, flip: bool, g: torch.Generator):
    """Random crop offsets and flip flags for ``n`` images."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device)
    fl = torch.rand(n, generator=g, device=g.device) < 0.5 if flip else torch.zeros(n, dtype=torch.bool, device=g.device)
    return oy, ox, fl


def apply_augmentation(x: torch.Tensor, pad: int, oy, ox, fl) -> torch.Tensor:
    """Crop each image at its offset from the zero-padded batch, then flip where asked (batched)."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = oy.to(x.device)[:, None] + torch.arange(h, device=x.device)
    cols = ox.to(x.device)[:, None] + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = xp[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    out = torch.where(fl.to(x.device).view(-1, 1, 1, 1), out.flip(3), out)
    return out.contiguous()


class Augmenter:
    """The dataset's usual augmentation for a run, drawn per global batch (``pad`` 0: none)."""

    def __init__(self, shape, enabled: bool, batch_size: int, n: int, rank: int = 0, world: int = 1):
        self.pad, self.flip = augmentation_for(shape) if enabled and len(shape) == 3 else (0, False)
        self.batch_size, self.n, self.rank, self.world = batch_size, n, rank, world

    def draw(self, x: torch.Tensor, step: int, g: torch.Generator):
        """The step's crop-and-flip as a function of a batch-shaped tensor (None without augmentation)."""
        if not self.pad:
            return None
        n_global = min(self.batch_size, self.n - step * self.batch_size)
        oy, ox, fl = draw_augmentation(n_global, self.pad, self.flip, g)
        sl, n = slice(self.rank, None, self.world), x.shape[0]
        return functools.partial(apply_augmentation, pad=self.pad, oy=oy[sl][:n], ox=ox[sl][:n], fl=fl[sl][:n])
