"""PART's importance masks, stored by dataset index (our own code).

The masks of the whole training set are computed at the start of an epoch, in
batches, from the un-augmented images in dataset order, and kept as one
boolean (N, 1, H, W) tensor indexed by dataset position. A training batch
reads the masks of *its* images through ``ctx.index``, so they stay with
their images whatever the shuffling. (The reference implementation computes
the masks in one shuffled pass over its loader and reads them by batch number
in another, so each image gets the mask of some other image.)

The engine crops and flips each batch after loading it; the batch's masks are
cropped and flipped the same way (``ctx.state["augmentation"]``), so a mask
pixel still covers the image pixel it was computed for. Pixels brought in by
the crop's zero padding are unimportant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that use it, so that `advkit list` stays fast
    import torch

from advkit_part.budget import important
from advkit_part.cam import cam_maps


def dataset_batches(data, batch_size: int, device):
    """``(images, labels)`` of ``data`` in dataset order, ``batch_size`` at a time, on ``device``."""
    import torch

    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    for x, y in loader:
        yield x.to(device, torch.float32), torch.as_tensor(y).to(device, torch.long)


class MaskBank:
    """Boolean importance masks of every training image, by dataset index."""

    def __init__(self, high: torch.Tensor | None = None, epoch: int | None = None):
        self.high = high
        self.epoch = epoch  # the epoch whose start computed them

    def compute(self, model, data, *, layer, variant: str, target: str, threshold: float, batch_size: int,
                device, epoch: int) -> None:
        """Masks of all of ``data`` with ``model`` as it is now (eval mode, frozen weights)."""
        import torch

        parts = []
        for x, y in dataset_batches(data, batch_size, device):
            cam = cam_maps(model, x, y, layer, variant=variant, target=target, batch_size=batch_size)
            parts.append(important(cam, threshold))
        self.high = torch.cat(parts)
        self.epoch = int(epoch)

    def for_batch(self, index: torch.Tensor, augmentation=None) -> torch.Tensor:
        """The masks of the images at dataset positions ``index``, moved as the batch's augmentation moved them."""
        high = self.high[index.to(self.high.device)]
        if augmentation is not None:
            high = augmentation(high.float()) > 0.5
        return high

    def state_dict(self) -> dict:
        if self.high is None:
            return {}
        return {"masks": self.high.cpu(), "masks_epoch": int(self.epoch)}

    def load_state_dict(self, state: dict, device=None) -> None:
        if "masks" in state:
            self.high = state["masks"].bool().to(device) if device is not None else state["masks"].bool()
            self.epoch = int(state.get("masks_epoch", 0))
