"""Datasets of images in [0, 1] with what a model and an evaluation need to know about them.

``load_dataset(name, split)`` looks ``name`` up in the dataset registry (the
embedded default ``fmnist-mini``, the torchvision sets, ``imagefolder``); a path
to a folder is read as an image folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch.utils.data import Dataset

from advkit._internal.errors import UserError


@dataclass
class DataInfo:
    """What is known about a dataset besides its images."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    default_eps: str = "8/255"
    source: str = ""
    split: str = ""


class ImageData(Dataset):
    """A dataset of ``(image in [0, 1] as CxHxW float, label)`` plus its :class:`DataInfo`.

    Wraps any map-style dataset that yields such pairs; :meth:`subset` keeps
    the info. ``.info`` attributes are mirrored (``data.num_classes``).
    """

    def __init__(self, base: Dataset, info: DataInfo, indices: Sequence[int] | None = None):
        self.base = base
        self.info = info
        self.indices = list(indices) if indices is not None else None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)

    def __getitem__(self, i: int):
        j = self.indices[i] if self.indices is not None else i
        x, y = self.base[j]
        return x, int(y)

    def __getattr__(self, name):
        if name in ("info", "base", "indices"):
            raise AttributeError(name)
        return getattr(self.info, name)

    def subset(self, indices: Sequence[int]) -> "ImageData":
        idx = [self.indices[i] for i in indices] if self.indices is not None else list(indices)
        return ImageData(self.base, self.info, idx)

    def first(self, n: int | None) -> "ImageData":
        """The first ``n`` items (all when ``n`` is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return self.subset(range(n))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels as two tensors (for small in-memory sets)."""
        if isinstance(self.base, TensorImages) and self.indices is None:
            return self.base.images, self.base.labels
        xs, ys = zip(*(self[i] for i in range(len(self))))
        return torch.stack(xs), torch.tensor(ys)


class TensorImages(Dataset):
    """Images held in memory as a uint8 (N, C, H, W) or float tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def load_dataset(name: str | None = None, split: str = "test", *, data_dir: str | None = None, n: int | None = None,
                 **params) -> ImageData:
    """Load a registered dataset (or an image folder given as a path); ``n`` keeps the first n items.

    ``name`` None (or ``"default"``) is the dataset a plugin declares as the default."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import DEFAULT, bind_params, parse_spec

    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(name, (str, type(None))):
        raise UserError(f"dataset: expected a name, got {type(name).__name__}")
    reg = registry("dataset")
    spec_name, spec_params = parse_spec(name) if name and "=" in name else (name, {})
    if spec_name is None or spec_name.strip().lower() == DEFAULT:
        entry = reg.default()
    elif spec_name not in reg and os.path.isdir(spec_name):
        spec_params = {"root": spec_name, **spec_params}
        entry = _folder_reader(reg, spec_name)
    else:
        entry = reg.get(spec_name)
    kwargs = bind_params(entry, {**spec_params, **params})
    data = entry.factory(split, data_dir=data_dir, **kwargs)
    if not isinstance(data, ImageData):
        raise TypeError(f"dataset plugin {entry.provider!r} returned {type(data).__name__}, not ImageData")
    if n is not None and n <= 0:
        raise UserError(f"--n must be positive, got {n}")
    data.info.split = split
    return data.first(n)


def _folder_reader(reg, path: str):
    found = reg.with_capability("reads_folders")
    if not found:
        raise UserError(f"{path} is a folder, and no plugin reads folders of images (see 'advkit list datasets')")
    return found[0]


def check_images(x: torch.Tensor, bounds=(0.0, 1.0), where: str = "input") -> None:
    """Refuse images outside [0, 1] (a common sign of already normalized or 0-255 data)."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise UserError(f"{where}: expected a float tensor of images in [0, 1]")
    if not bool(torch.isfinite(x).all()):
        raise UserError(f"{where}: {int((~torch.isfinite(x)).sum())} pixel values are NaN or infinite")
    lo, hi = float(x.min()), float(x.max())
    if lo < bounds[0] - 1e-6 or hi > bounds[1] + 1e-6:
        if lo < 0:
            hint = " (already normalized? advkit models own their normalization: pass raw images)"
        else:
            hint = " (0-255 values? divide by 255)"
        raise UserError(f"{where}: images must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}]{hint}")


def check_sample(data, where: str, k: int = 256) -> None:
    """The data checks of an evaluation, on the images a run is about to use: all of an in-memory set,
    else the first ``k``; labels must be classes of the set."""
    if not isinstance(data, ImageData):
        raise UserError(f"{where}: expected a dataset name or an advkit.ImageData, got {type(data).__name__}")
    if not len(data):
        raise UserError(f"{where}: the dataset is empty")
    if isinstance(data.base, TensorImages) and data.indices is None:
        x, y = data.base.images, data.base.labels
    else:  # item by item: a file-backed set is read once, later, by the run itself
        items = [data[i] for i in range(min(k, len(data)))]
        x, y = torch.stack([torch.as_tensor(a) for a, _ in items]), torch.tensor([int(b) for _, b in items])
    check_images(x, where=where)
    check_labels(y, data.info.num_classes, where=where)


def check_labels(y, num_classes: int | None, *, count: int | None = None, where: str = "input") -> torch.Tensor:
    """One integer class index per image (``count`` images when given), each in ``[0, num_classes)``; the
    labels as a ``long`` tensor. The one label check of evaluation, training, attacks and explanation."""
    labels = torch.as_tensor(y).detach()
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool or \
            (count is not None and labels.shape[0] != count):
        per = f" ({count})" if count is not None else ""
        raise UserError(f"{where}: labels must be one integer label per image{per}, got {labels.dtype} of "
                        f"shape {tuple(labels.shape)}")
    bad = ((labels < 0) | (labels >= num_classes) if num_classes is not None else labels < 0).nonzero().flatten()
    if len(bad):
        at = bad.tolist()
        values = sorted({int(labels[i]) for i in at})
        shown = ", ".join(map(str, at[:5])) + (f" and {len(at) - 5} more" if len(at) > 5 else "")
        raise UserError(f"{where}: labels must lie in [0, {num_classes if num_classes is not None else 'inf'}), "
                        f"found {', '.join(map(str, values[:5]))} at point(s) {shown}")
    return labels.long()
