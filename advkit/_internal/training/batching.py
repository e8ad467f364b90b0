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

from advkit._internal.seeds import derive_seed, generator


def in_memory(data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels of an in-memory dataset (TensorImages, possibly a subset), else None."""
    from advkit._internal.data import TensorImages

    base = getattr(data, "base", None)
    if isinstance(base, TensorImages) and base.transform is None:
        if data.indices is None:
            return base.images, base.labels
        idx = torch.as_tensor(data.indices, dtype=torch.long)
        return base.images[idx], base.labels[idx]
    return None


def on_device(data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole dataset as two tensors on the device, read by the dataset's own ``tensors()`` when it has one
    (file datasets read themselves with DataLoader workers)."""
    tensors = in_memory(data)
    if tensors is None and callable(getattr(data, "tensors", None)):
        tensors = data.tensors()
    if tensors is None:
        xs, ys = zip(*(data[i] for i in range(len(data))))
        tensors = torch.stack(xs), torch.as_tensor(ys)
    return _move(tensors, device)


def _move(tensors, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (tensors[0].to(device, torch.float32, non_blocking=True),
            tensors[1].to(device, torch.long, non_blocking=True))


class EpochSampler:
    """The batch sampler of a persistent DataLoader: yields the index batches the current epoch set."""

    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def __iter__(self):
        return (b.tolist() for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Batches:
    """Batches of a dataset by index.

    An in-memory set lives on the device whole and a batch is an index into it
    (no copy between devices in the loop). A file-backed set is read by a
    DataLoader with ``workers`` processes kept across epochs, pinned memory on
    CUDA and asynchronous (``non_blocking``) copies; its worker seeds come from
    ``seed``, never from the global random state.
    """

    def __init__(self, data, device: torch.device, workers: int = 0, seed: int = 0):
        self.data = data
        self.device = device
        tensors = in_memory(data)
        self.x = self.y = self.loader = None
        if tensors is not None:
            self.x, self.y = _move(tensors, device)
            return
        self.sampler = EpochSampler()
        self.loader = torch.utils.data.DataLoader(
            data, batch_sampler=self.sampler, num_workers=workers, pin_memory=device.type == "cuda",
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(derive_seed(seed, "loader")),
        )

    def __len__(self) -> int:
        return len(self.data)

    def iterate(self, index_batches: list[torch.Tensor]):
        """``(indices, x, y)`` on the device for each batch of dataset indices."""
        if self.x is not None:
            for idx in index_batches:
                d = idx.to(self.device)
                yield d, self.x[d], self.y[d]
            return
        self.sampler.batches = index_batches
        for idx, (x, y) in zip(index_batches, self.loader):
            yield (idx.to(self.device, non_blocking=True), x.to(self.device, torch.float32, non_blocking=True),
                   torch.as_tensor(y).to(self.device, torch.long, non_blocking=True))


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
