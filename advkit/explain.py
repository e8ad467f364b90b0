"""The explanation engine behind ``advkit explain`` and ``advkit.explain``.

An explainer (registered through ``advkit_register_explainers``) is built as
``factory(**params)`` and called as ``explain(model, x, y) -> Explanation``.
The engine runs it on the first ``n`` images (for one model, or two side by
side with ``compare``) and writes ``explanation.npz``, ``figure.png`` and
``summary.json``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from advkit.errors import UserError


@dataclass
class Explanation:
    """What an explainer found for a batch.

    ``maps``: attributions shaped like ``inputs`` or (N, 1, H, W);
    ``images``: generated or optimised images in [0, 1] (feature visualisation,
    inversion, class generation); ``scores``: per-image numbers (e.g. the
    completeness gap, a feature distance); ``meta``: anything JSON-able;
    ``extras``: more named image sets in [0, 1], each (N, C, H, W) and aligned
    with ``images`` (e.g. the dataset images that activate a visualised feature
    most), one figure row each.

    The figure reads four optional ``meta`` keys: ``input_captions`` and
    ``captions`` (one short string per column, under the input and the
    images rows), ``inputs_title`` and ``images_title`` (row labels).
    """

    method: str
    inputs: torch.Tensor
    maps: torch.Tensor | None = None
    images: torch.Tensor | None = None
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {f"{prefix}inputs": self.inputs.detach().cpu().numpy()}
        if self.maps is not None:
            out[f"{prefix}maps"] = self.maps.detach().cpu().numpy()
        if self.images is not None:
            out[f"{prefix}images"] = self.images.detach().cpu().numpy()
        for k, v in self.extras.items():
            out[f"{prefix}extra_{k}"] = v.detach().cpu().numpy()
        for k, v in self.scores.items():
            out[f"{prefix}score_{k}"] = torch.as_tensor(v).detach().cpu().numpy()
        return out


# What ``advkit explain`` is running on, for explainers that need more of the data.
_session = {"quiet": False, "dataset": None, "data_dir": None}


def progress(total: int, desc: str):
    """A tqdm bar for long-running explainers; silent off a terminal and under ``advkit --quiet``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=True if _session["quiet"] else None)


def session_dataset() -> tuple[str | None, str | None]:
    """The ``--dataset`` and ``--data-dir`` of the running ``advkit explain`` ((None, None) outside it)."""
    return _session["dataset"], _session["data_dir"]


def create_explainer(spec: str, **params):
    """Build a registered explainer from ``"name"`` or ``"name:key=value,..."``."""
    from advkit.plugins import registry
    from advkit.registry import bind_params, parse_spec

    name, spec_params = parse_spec(spec)
    entry = registry("explainer").get(name)
    return entry.factory(**bind_params(entry, {**spec_params, **params}))


def explain(model, x: torch.Tensor, y: torch.Tensor, method: str, /, **params) -> Explanation:
    """Explain ``model`` on a batch with the explainer ``method``.

    The first four arguments are positional, so that an explainer may itself
    have a parameter called ``method`` (``explain(m, x, y, "ig", method="riemann_left")``).
    """
    from advkit.data import check_images

    check_images(x, where="explain input")
    model = model.eval()
    fn = create_explainer(method, **params)
    result = fn(model, x, y)
    if not isinstance(result, Explanation):
        raise TypeError(f"explainer {method!r} returned {type(result).__name__}, not an Explanation")
    return result


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


def figure(explanations: list[tuple[str, Explanation]], max_cols: int = 10) -> bytes:
    """A PNG grid, one column per image: the inputs, then per model its maps
    (as overlays on the inputs), its images and its extra image sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = explanations[0][1]
    n = max([first.inputs.shape[0]] + [e.images.shape[0] for _, e in explanations if e.images is not None])
    cols = min(max_cols, n)

    def images(t):
        return [_to_image(t[i]) for i in range(min(cols, t.shape[0]))]

    # (title, images, maps or None, captions or None)
    rows = [(first.meta.get("inputs_title", "input"), images(first.inputs), None, first.meta.get("input_captions"))]
    for label, e in explanations:
        if e.maps is not None:
            rows.append((f"{label}: {e.method}", images(e.inputs), [_to_map(e.maps[i]) for i in range(min(cols, e.maps.shape[0]))], None))
        if e.images is not None:
            title = e.meta.get("images_title", f"{e.method} images")
            rows.append((f"{label}: {title}", images(e.images), None, e.meta.get("captions")))
        for key, t in e.extras.items():
            rows.append((f"{label}: {key}", images(t), None, None))
    height = [1.7 + (0.15 if caps else 0.0) for *_, caps in rows]
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, sum(height)), dpi=110, squeeze=False,
                             gridspec_kw={"height_ratios": height})
    for r, (title, imgs, maps, caps) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(imgs):
                continue
            img = imgs[c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if maps is not None and c < len(maps):
                ax.imshow(maps[c], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if caps is not None and c < len(caps):
                _caption(ax, caps[c])
        axes[r][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(explanations: list[tuple[str, Explanation]], out: Path, summary: dict) -> None:
    from advkit.checkpoint import atomic_write_bytes, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, (label, e) in enumerate(explanations):
        arrays.update(e.arrays(prefix="" if k == 0 else "compare_"))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / "explanation.npz", buf.getvalue())
    atomic_write_bytes(out / "figure.png", figure(explanations))
    summary = dict(summary)
    summary["models"] = [
        {"model": label, "method": e.method, "meta": e.meta, "scores": {k: [float(v) for v in torch.as_tensor(s).flatten()] for k, s in e.scores.items()}}
        for label, e in explanations
    ]
    atomic_write_json(out / "summary.json", summary)


def explain_cli(*, method, model, weights, compare, dataset, data_dir, n, opts, out, device, seed, quiet):
    """``advkit explain``: load models and data, run the explainer, write the outputs."""
    import click

    from advkit.data import load_dataset
    from advkit.evaluate import versions
    from advkit.models import load_model
    from advkit.registry import parse_spec

    saved = dict(_session)
    _session.update(quiet=bool(quiet), dataset=dataset, data_dir=data_dir)
    try:
        torch.manual_seed(seed)
        params = {}
        for item in opts:
            k, sep, v = item.partition("=")
            if not sep:
                raise UserError(f"--opt {item!r} must look like PARAM=VALUE")
            params[k.strip()] = v
        name, spec_params = parse_spec(method)
        create_explainer(name, **{**spec_params, **params})  # fail early on a bad name or parameter
        data = load_dataset(dataset, "test", data_dir=data_dir, n=n)
        x, y = data.tensors()
        x, y = x.to(device), y.to(device)
        info = data.info
        results = []
        for spec in [model] + ([compare] if compare else []):
            m = load_model(spec, num_classes=info.num_classes, input_shape=info.input_shape, mean=info.mean, std=info.std,
                           weights=weights if spec == model else None, device=device)
            torch.manual_seed(seed)
            results.append((spec, explain(m, x, y, name, **{**spec_params, **params})))
        if info.classes:
            for _, e in results:  # caption the explained images with their labels
                if "input_captions" not in e.meta and e.inputs.shape == x.shape and torch.equal(e.inputs, x):
                    e.meta["input_captions"] = [info.classes[int(c)] if int(c) < len(info.classes) else str(int(c)) for c in y]
        summary = {"method": name, "params": {**spec_params, **params}, "dataset": info.name, "n": int(x.shape[0]), "seed": seed, "versions": versions()}
        write_outputs(results, Path(out), summary)
        click.echo(f"{name}: wrote {os.path.join(out, 'explanation.npz')}, figure.png and summary.json")
    finally:
        _session.update(saved)
