"""ImageData over files: a seeded class-balanced ``first(n)`` and ``tensors()`` through a DataLoader.

Own code: neither torchvision nor timm picks a class-balanced subset of a dataset.
``first(n)`` is how the core's ``load_dataset(..., n=...)`` and the engines take their
``-n`` points, so the factory learns ``n`` there; the seed is the dataset's ``seed=``
parameter (``imagenet:seed=1``).
"""

from __future__ import annotations

import os
from typing import Sequence

from advkit.plugin import ImageData, UserError

SUBSETS = ("balanced", "first")


def balanced_indices(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` positions of ``labels``, as even across classes as possible, chosen with ``seed``.

    Classes are visited in a seeded order, each yielding its items in a seeded order,
    one per class per round; the result is sorted (file order). The subset for ``n``
    contains the subset for any smaller ``n``.
    """
    import torch

    g = torch.Generator().manual_seed(int(seed))
    by_class: dict[int, list[int]] = {}
    for pos, c in enumerate(labels):
        by_class.setdefault(int(c), []).append(pos)
    classes = sorted(by_class)
    order = [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]
    queues = {c: [by_class[c][i] for i in torch.randperm(len(by_class[c]), generator=g).tolist()] for c in classes}
    picked: list[int] = []
    for k in range(max(len(q) for q in queues.values())):
        picked += [queues[c][k] for c in order if k < len(queues[c])][: n - len(picked)]
        if len(picked) >= n:
            break
    return sorted(picked)


def _auto_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class FileImages(ImageData):
    """ImageData over files: seeded class-balanced ``first(n)``, ``tensors()`` through a DataLoader."""

    def __init__(self, base, info, indices=None, *, labels: Sequence[int], subset: str = "first", seed: int = 0,
                 workers: int = -1):
        super().__init__(base, info, indices)
        self.labels = list(labels)
        self.subset_mode, self.seed = subset, int(seed)
        self.workers = _auto_workers() if workers < 0 else int(workers)

    def subset(self, indices):
        idx = [self.indices[i] for i in indices] if self.indices is not None else list(indices)
        return FileImages(self.base, self.info, idx, labels=self.labels, subset=self.subset_mode, seed=self.seed,
                          workers=self.workers)

    def first(self, n):
        if n is None or n >= len(self) or self.subset_mode == "first":
            return super().first(n)
        own = self.indices if self.indices is not None else range(len(self.base))
        return self.subset(balanced_indices([self.labels[j] for j in own], n, self.seed))

    def tensors(self):
        import torch

        from advkit.plugin import TensorImages

        if isinstance(self.base, TensorImages) and self.base.transform is None:
            idx = torch.as_tensor(self.indices if self.indices is not None else range(len(self.base)))
            return self.base.images[idx], self.base.labels[idx]
        loader = torch.utils.data.DataLoader(self, batch_size=64, num_workers=self.workers,
                                             pin_memory=torch.cuda.is_available())
        xs, ys = zip(*loader) if len(self) else ((), ())
        return torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys]).long()


def file_images(base, info, *, labels, subset: str, seed: int, workers: int):
    if subset not in SUBSETS:
        raise UserError(f"subset={subset!r}: choose {' or '.join(SUBSETS)}")
    return FileImages(base, info, labels=labels, subset=subset, seed=seed, workers=workers)


