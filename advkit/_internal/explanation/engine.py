"""The explanation engine behind ``advkit explain`` and ``advkit.explain``.

An explainer (registered through ``advkit_register_explainers``, see
:mod:`advkit._internal.explainer`) is built as ``factory(**params)`` and called as
``explain(model, x, y, ctx) -> Explanation``. The engine runs it on a batch
(for one model, or two side by side with ``compare``) and writes
``explanation.npz``, ``figure.png`` and ``summary.json``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from advkit._internal.errors import UserError
from advkit._internal.explainer import ExplainContext, Explanation, create_explainer


def explain(model, x: torch.Tensor, y: torch.Tensor, method: str, /, *, ctx: ExplainContext | None = None,
            **params) -> Explanation:
    """Explain ``model`` on a batch with the explainer ``method``.

    The first four arguments are positional, so that an explainer may itself
    have a parameter called ``method`` (``explain(m, x, y, "ig", method="riemann_left")``).
    ``ctx`` tells the explainer about the run (dataset, device, quiet, seed); by
    default the batch's device and seed 0. The engine seeds everything with ``ctx.seed`` before the
    explainer runs, so the API and ``advkit explain`` give the same result.
    """
    from advkit._internal.seeds import seed_everything

    check_batch(model, x, y)
    model = model.eval()
    fn = create_explainer(method, **params)
    ctx = ctx or ExplainContext(device=str(x.device))
    seed_everything(ctx.seed)
    result = fn(model, x, y, ctx)
    if not isinstance(result, Explanation):
        raise UserError(f"explainer {method!r} returned {type(result).__name__}, not an Explanation")
    return result


def check_batch(model, x, y) -> None:
    """The checks of an evaluation's data, on a batch to explain: images in [0, 1], one label per image,
    each a class of the model."""
    from advkit._internal.data import check_images, check_labels

    if not torch.is_tensor(x) or x.dim() != 4 or not x.shape[0]:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise UserError(f"explain: x must be a non-empty (N, C, H, W) batch of images, got {shape}")
    check_images(x, where="explain input")
    if not torch.is_tensor(y):
        raise UserError(f"explain: y must be a tensor of one integer label per image, got {type(y).__name__}")
    check_labels(y, getattr(model, "num_classes", None), count=x.shape[0], where="explain")


def _to_image(t: torch.Tensor) -> np.ndarray:
    a = t.detach().cpu().float().numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _to_map(t: torch.Tensor) -> np.ndarray:
    a = t.detach().cpu().float().abs().sum(0).numpy()
    top = np.percentile(a, 99) or a.max() or 1.0
    return np.clip(a / top, 0, 1)


def _caption(ax, text) -> None:
    if text:
        ax.text(0.5, -0.03, str(text), transform=ax.transAxes, ha="center", va="top", fontsize=6)


def _count(explanations) -> int:
    """Columns: one per explained image."""
    return int(explanations[0][1].inputs.shape[0])


def _rows(explanations, cols: range) -> list[tuple]:
    """(title, images, maps or None, captions or None) per figure row, for the image columns ``cols``."""
    first = explanations[0][1]

    def images(t):
        return [_to_image(t[i]) for i in cols if i < t.shape[0]]

    def part(items):
        return [items[i] for i in cols if i < len(items)] if items else None

    rows = [(first.meta.get("inputs_title", "input"), images(first.inputs), None, part(first.meta.get("input_captions")))]
    for label, e in explanations:
        if e.maps is not None:
            maps = [_to_map(e.maps[i]) for i in cols if i < e.maps.shape[0]]
            space = e.meta.get("maps_space")  # maps that do not live on the pixels are drawn on their own
            under = None if space else images(e.inputs)
            rows.append((f"{label}: {e.method}" + (f" ({space})" if space else ""), under, maps, None))
        if e.images is not None:
            title = e.meta.get("images_title", f"{e.method} images")
            rows.append((f"{label}: {title}", images(e.images), None, part(e.meta.get("captions"))))
        for key, t in e.extras.items():
            rows.append((f"{label}: {key}", images(t), None, None))
    return rows


def figure(explanations: list[tuple[str, Explanation]], max_cols: int = 10, page: int = 0) -> bytes:
    """A PNG grid, one column per image: the inputs, then per model its maps (overlaid on the inputs, with a
    colour bar: 1 is the map's 99th percentile), its images and its extra image sets. ``page`` selects
    images ``page * max_cols`` onwards; the title says which of how many are shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = _count(explanations)
    cols = range(page * max_cols, min(n, (page + 1) * max_cols))
    rows = _rows(explanations, cols)
    width = len(cols)
    height = [1.7 + (0.15 if caps else 0.0) for *_, caps in rows]
    fig, axes = plt.subplots(len(rows), width, figsize=(1.6 * width + 0.6, sum(height) + 0.3), dpi=110,
                             squeeze=False, gridspec_kw={"height_ratios": height})
    overlay = None
    for r, (title, imgs, maps, caps) in enumerate(rows):
        for c in range(width):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(imgs if imgs is not None else maps):
                continue
            if imgs is not None:
                ax.imshow(imgs[c], cmap="gray" if imgs[c].ndim == 2 else None, vmin=0, vmax=1)
            if maps is not None and c < len(maps):
                overlay = ax.imshow(maps[c], cmap="jet", alpha=0.5 if imgs is not None else 1.0, vmin=0, vmax=1)
            if caps is not None and c < len(caps):
                _caption(ax, caps[c])
        axes[r][0].set_title(title, fontsize=8, loc="left")
    shown = f"image {cols.start + 1}" if len(cols) == 1 else f"images {cols.start + 1}-{cols.stop}"
    fig.suptitle(f"{shown} of {n}", fontsize=8)
    right = 1.0 if overlay is None else 1 - 0.75 / fig.get_figwidth()  # room for the colour bar and its label
    fig.tight_layout(rect=(0, 0, right, 1))
    if overlay is not None:
        cax = fig.add_axes((right + 0.1 / fig.get_figwidth(), 0.12, 0.12 / fig.get_figwidth(), 0.76))
        bar = fig.colorbar(overlay, cax=cax)
        bar.set_label("|attribution| / its 99th percentile", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def figure_names(n: int, max_cols: int = 10) -> list[str]:
    """``figure.png`` for images 1-10, then ``figure-2.png``... (one page per ``max_cols`` images)."""
    pages = max(1, -(-n // max_cols))
    return ["figure.png"] + [f"figure-{k + 1}.png" for k in range(1, pages)]


def write_outputs(explanations: list[tuple[str, Explanation]], out: Path, summary: dict) -> None:
    from advkit._internal.files import atomic_write_bytes, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, (_label, e) in enumerate(explanations):
        arrays.update(e.arrays(prefix="" if k == 0 else "compare_"))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / "explanation.npz", buf.getvalue())
    names = figure_names(_count(explanations))
    for page, name in enumerate(names):
        atomic_write_bytes(out / name, figure(explanations, page=page))
    summary = dict(summary)
    summary["figures"] = names
    summary["models"] = [
        {"model": label, "method": e.method, "meta": e.meta, "scores": {k: [float(v) for v in torch.as_tensor(s).flatten()] for k, s in e.scores.items()}}
        for label, e in explanations
    ]
    atomic_write_json(out / "summary.json", summary)
