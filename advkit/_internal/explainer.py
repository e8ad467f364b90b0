"""The explainer contract: what an explainer returns (:class:`Explanation`) and what it is told (:class:`ExplainContext`).

An explainer plugin's factory ``factory(**params)`` returns a callable
``explain(model, x, y, ctx) -> Explanation`` where ``model`` is in eval mode
and takes images in [0, 1], ``x`` a batch of such images, ``y`` their labels
and ``ctx`` an :class:`ExplainContext`. The engine (``advkit explain``,
``advkit.explain``) writes the arrays (``.npz``), a figure (``.png``) and a JSON
summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


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


@dataclass
class ExplainContext:
    """What an explainer is told about the run besides the model and the batch.

    ``dataset``/``data_dir``: the dataset being explained (an explainer that
    needs more of its images, e.g. for reference statistics, loads them with
    :func:`advkit._internal.data.load_dataset`); ``device``; ``quiet``: no progress bars;
    ``seed``.
    """

    dataset: str | None = None
    data_dir: str | None = None
    device: str = "cpu"
    quiet: bool = False
    seed: int = 0

    def progress(self, total: int, desc: str):
        """A progress bar for long-running explainers (:func:`advkit._internal.progress.progress`; silent when ``quiet``)."""
        from advkit._internal.progress import progress

        return progress(total, desc, quiet=self.quiet)


def create_explainer(spec: str, **params):
    """Build a registered explainer from ``"name"`` or ``"name:key=value,..."``."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import bind_params, parse_spec

    name, spec_params = parse_spec(spec)
    entry = registry("explainer").get(name)
    return entry.factory(**bind_params(entry, {**spec_params, **params}))


