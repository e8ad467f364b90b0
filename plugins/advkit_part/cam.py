"""Class activation maps for PART, computed in batches on a frozen model in eval mode.

Grad-CAM is captum's ``LayerGradCam``; XGradCAM and LayerCAM (which captum
lacks) are advkit's own, all three through :func:`advkit_explainers.cam.compute_cam`.
The layer is the last convolutional stage found by the explainers' layer
finder unless named (``part:layer=backbone.features.7``). The class explained
is the model's prediction, as in the reference implementation, or the label
(``target=label``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that use it, so that `advkit list` stays fast
    import torch

from advkit.errors import UserError, closest

VARIANTS = ("gradcam", "xgradcam", "layercam")
TARGETS = ("pred", "label")


def check_choice(param: str, value: str, choices) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        hits = closest(v, choices)
        hint = f" (did you mean {hits[0]!r}?)" if hits else ""
        raise UserError(f"part.{param} must be one of {', '.join(choices)}, got {value!r}{hint}")
    return v


def find_layer(model, probe: torch.Tensor, name: str = "") -> tuple[str, torch.nn.Module]:
    """The layer whose maps PART reads: ``name``, or the last convolutional stage."""
    from advkit_explainers.layers import cam_layer

    try:
        return cam_layer(model, probe, name)
    except UserError as exc:
        raise UserError(f"part.layer: {exc}") from None


@contextlib.contextmanager
def inspecting(model):
    """Eval mode and frozen weights (no parameter gradients), restored afterwards."""
    from advkit.train import frozen

    was_training = model.training
    model.eval()
    try:
        with frozen(model):
            yield model
    finally:
        model.train(was_training)


def cam_maps(model, x: torch.Tensor, y: torch.Tensor, layer, variant: str = "gradcam", target: str = "pred",
             batch_size: int = 256) -> torch.Tensor:
    """Non-negative (N, 1, H, W) maps of ``variant`` at ``layer`` for the predicted (or true) classes."""
    import torch

    from advkit_explainers.cam import compute_cam

    with inspecting(model):
        if target == "pred":
            with torch.inference_mode():
                cls = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])
            cls = cls.clone()
        else:
            cls = y.to(x.device).long()
        maps = compute_cam(model, x, cls, layer, variant=variant, batch_size=batch_size)
    return maps.detach()
