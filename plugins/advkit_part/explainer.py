"""The ``part-map`` explainer: the per-pixel budgets PART gives a model's images.

``maps`` are the class activation maps (scaled to max 1, shown over the
images), ``images`` the budget maps as masks: 1 (white) where a pixel keeps
eps, 0 (black) where it gets eps_low, so ``eps_low + (eps - eps_low) * images``
is the budget. Settings not given are those of the ``part`` defense the model
was trained with (read from its checkpoint), else PART's defaults; eps is the
model's training eps, else the dataset's usual one.
"""

from __future__ import annotations

from advkit_part.budget import DEFAULT_RATIO, check_low, check_threshold, important, low_budget
from advkit_part.cam import TARGETS, VARIANTS, cam_maps, check_choice, find_layer


def trained_with(model) -> dict:
    """Parameters of the ``part`` defense in the model's training recipe ({} if none)."""
    for recipe in reversed((getattr(model, "info", None) or {}).get("defenses") or []):
        if recipe.get("name") == "part":
            return dict(recipe.get("params") or {})
    return {}


def default_eps(model, ctx) -> float:
    """The eps the model was trained at, else the usual eps of the dataset being explained, else 8/255."""
    from advkit.plugin import parse_eps

    threat = (getattr(model, "info", None) or {}).get("threat") or {}
    if threat.get("eps") is not None:
        return float(threat["eps"])
    name, data_dir = ctx.dataset, ctx.data_dir
    if name:
        from advkit.plugin import load_dataset

        return parse_eps(load_dataset(name, "test", data_dir=data_dir, n=1).info.default_eps)
    return 8 / 255


def shown(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if eps and abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def part_map(cam: str = "", layer: str = "", threshold: float | None = None, eps: float | None = None,
             eps_low: float | None = None, ratio: float | None = None, target: str = "", batch_size: int = 256):
    """PART's per-pixel eps maps (eps on high-CAM pixels, eps_low elsewhere) with the CAMs behind them.

    CAM: gradcam | xgradcam | layercam; LAYER: dotted module name (last
    convolutional stage when empty); THRESHOLD: z-score above which a pixel
    keeps eps; EPS_LOW or RATIO: the other pixels' budget; TARGET: pred | label.
    Unset options come from the model's ``part`` training recipe.
    """
    if cam:
        check_choice("cam", cam, VARIANTS)
    if target:
        check_choice("target", target, TARGETS)
    if threshold is not None:
        check_threshold(threshold)
    check_low(eps_low, ratio)

    def explain(model, x, y, ctx):
        from advkit.plugin import Explanation

        rec = trained_with(model)
        variant = check_choice("cam", cam or rec.get("cam") or "gradcam", VARIANTS)
        tgt = check_choice("target", target or rec.get("target") or "pred", TARGETS)
        thr = check_threshold(threshold if threshold is not None else rec.get("threshold", 1.0))
        e = float(eps) if eps is not None else default_eps(model, ctx)
        low = low_budget(e, eps_low, ratio) if (eps_low, ratio) != (None, None) else \
            low_budget(e, rec.get("eps_low"), rec.get("ratio"))
        name = find_layer(model, x[:1], layer or rec.get("layer") or "")
        maps = cam_maps(model, x, y, name, variant, tgt, batch_size)
        high = important(maps, thr)
        frac = high.float().flatten(1).mean(1)
        peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return Explanation(
            method="part-map", inputs=x.detach(), maps=maps / peak, images=high.float(),
            scores={"high_fraction": frac, "mean_eps": low + (e - low) * frac},
            meta={"cam": variant, "layer": name, "target": tgt, "threshold": thr, "eps": e, "eps_low": low,
                  "from_checkpoint": bool(rec), "default_ratio": DEFAULT_RATIO,
                  "images": "1 where the budget is eps, 0 where it is eps_low",
                  "images_title": f"eps map: white {shown(e)}, black {shown(low)}",
                  "captions": [f"{100 * float(f):.0f}% at {shown(e)}" for f in frac]},
        )

    return explain
