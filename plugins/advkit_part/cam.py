"""Class activation maps for PART, computed in batches on a frozen model in eval mode.

The maps come from the registered CAM explainer (``gradcam``, with its
``gradcam``/``xgradcam``/``layercam`` variants), asked for through the
registry like any other component. The layer is the last convolutional stage
the explainer finds unless named (``part:layer=backbone.features.7``). The
class explained is the model's prediction, as in the reference
implementation, or the label (``target=label``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that use it, so that `advkit list` stays fast
    import torch

from advkit.plugin import ExplainContext, UserError, closest, create_explainer

CAM_EXPLAINER = "gradcam"
VARIANTS = ("gradcam", "xgradcam", "layercam")
TARGETS = ("pred", "label")


def check_choice(param: str, value: str, choices) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        hits = closest(v, choices)
        hint = f" (did you mean {hits[0]!r}?)" if hits else ""
        raise UserError(f"part.{param} must be one of {', '.join(choices)}, got {value!r}{hint}")
    return v


@contextlib.contextmanager
def inspecting(model):
    """Eval mode and frozen weights (no parameter gradients), restored afterwards."""
    from advkit.plugin import frozen

    was_training = model.training
    model.eval()
    try:
        with frozen(model):
            yield model
    finally:
        model.train(was_training)


def _explain(model, x, y, layer: str, variant: str, target: str, batch_size: int):
    explainer = create_explainer(CAM_EXPLAINER, variant=variant, layer=layer, target=target, batch_size=batch_size)
    with inspecting(model):
        return explainer(model, x, y.to(x.device).long(), ExplainContext(device=str(x.device), quiet=True))


def find_layer(model, probe: torch.Tensor, name: str = "") -> str:
    """The dotted name of the layer whose maps PART reads: ``name``, or the last convolutional stage."""
    import torch

    try:
        e = _explain(model, probe, torch.zeros(probe.shape[0], dtype=torch.long), name, "gradcam", "pred", 1)
    except UserError as exc:
        raise UserError(f"part.layer: {exc}") from None
    return e.meta["layer"]


def cam_maps(model, x: torch.Tensor, y: torch.Tensor, layer: str, variant: str = "gradcam", target: str = "pred",
             batch_size: int = 256) -> torch.Tensor:
    """Non-negative (N, 1, H, W) maps of ``variant`` at ``layer`` for the predicted (or true) classes."""
    return _explain(model, x, y, layer, variant, target, batch_size).maps.detach()
