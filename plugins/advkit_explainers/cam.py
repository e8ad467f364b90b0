"""Class activation maps of a convolutional layer, upsampled to the input.

- ``gradcam``: captum's ``LayerGradCam`` (ReLU of Σ_k mean(∂y/∂A_k)·A_k).
- ``xgradcam`` (Fu et al., 2020) and ``layercam`` (Jiang et al., 2021) are not in
  captum and are computed here from the layer's activations A and gradients
  ∂y/∂A (read with a forward hook):
  XGradCAM weighs channel k by Σ_ij A_kij·∂y/∂A_kij / Σ_ij A_kij;
  LayerCAM weighs every position by ReLU(∂y/∂A_kij).

Maps are upsampled with captum's ``LayerAttribution.interpolate`` (bilinear,
so they stay non-negative). :func:`compute_cam` is the batched entry point
other plugins use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advkit.plugin import Explanation, UserError
from advkit_explainers.common import check_choice, target_classes
from advkit_explainers.layers import cam_layer

VARIANTS = ("gradcam", "xgradcam", "layercam")


def _activations_and_grads(model, layer, x, cls):
    store = {}

    def hook(mod, args, out):
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    x = x.detach().requires_grad_(True)  # keeps a graph to the layer when the weights are frozen
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), a)
    return a.detach(), g.detach()


def _own_cam(model, layer, x, cls, variant):
    a, g = _activations_and_grads(model, layer, x, cls)
    if variant == "xgradcam":
        w = (a * g).sum((2, 3), keepdim=True) / (a.sum((2, 3), keepdim=True) + 1e-7)
        return F.relu((w * a).sum(1, keepdim=True))
    return F.relu((F.relu(g) * a).sum(1, keepdim=True))


def compute_cam(model, x, y, layer=None, variant: str = "gradcam", batch_size: int = 128, normalize: bool = False):
    """(N, 1, H, W) non-negative class activation maps of ``model`` for classes ``y`` on images ``x``.

    ``layer``: a module, a dotted name, or None to find the last convolutional
    stage; ``variant``: gradcam | xgradcam | layercam; ``normalize``: scale
    each map to max 1. Runs ``batch_size`` images at a time; the model's
    mode is left as it is.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    variant = check_choice("cam variant", variant, VARIANTS)
    if layer is None or isinstance(layer, str):
        _, layer = cam_layer(model, x, layer or "")
    y = torch.as_tensor(y, device=x.device).long()
    h, w = x.shape[-2:]
    gc = LayerGradCam(model, layer) if variant == "gradcam" else None
    maps, batch_size = [], max(1, int(batch_size))
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size].detach(), y[i : i + batch_size]
        with torch.enable_grad():
            if gc is not None:
                m = gc.attribute(xb, target=yb, relu_attributions=True)
            else:
                m = _own_cam(model, layer, xb, yb, variant)
        if m.dim() != 4:
            raise UserError(f"CAM layer output has shape {tuple(m.shape)}; pick a convolutional layer with layer=NAME")
        maps.append(LayerAttribution.interpolate(m.detach(), (h, w), interpolate_mode="bilinear").clamp_min(0))
    out = torch.cat(maps)
    if normalize:
        out = out / out.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return out


def gradcam(variant: str = "gradcam", layer: str = "", target: str = "label", batch_size: int = 128):
    """Grad-CAM (captum LayerGradCam), XGradCAM or LayerCAM of the last convolutional stage.

    VARIANT: gradcam | xgradcam | layercam; LAYER: a dotted module name
    (``backbone.features.8``), found automatically when empty; TARGET: label
    or pred. Maps are (N, 1, H, W), non-negative, upsampled bilinearly.
    """
    variant = check_choice("gradcam.variant", variant, VARIANTS)

    def explain(model, x, y, ctx):
        name, module = cam_layer(model, x, layer)
        cls = target_classes(model, x, y, target)
        maps = compute_cam(model, x, cls, module, variant=variant, batch_size=batch_size)
        return Explanation(
            method=variant, inputs=x.detach(), maps=maps,
            scores={"peak": maps.flatten(1).amax(1)},
            meta={"variant": variant, "layer": name, "target": target, "classes": cls.tolist()},
        )

    return explain
