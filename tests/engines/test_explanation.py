"""The explanation engine's outputs: every image on a page of the figure, a colour bar for maps."""

from __future__ import annotations

import json

import torch
from PIL import Image

from advkit._internal.explainer import Explanation
from advkit._internal.explanation.engine import figure, figure_names, write_outputs


def explanation(n: int, maps: bool = True) -> Explanation:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return Explanation(method="probe", inputs=x, maps=torch.rand(n, 1, 8, 8, generator=g) if maps else None,
                       images=None if maps else x.flip(-1))


def test_pages_cover_every_image(tmp_path):
    write_outputs([("m", explanation(23))], tmp_path, {"method": "probe"})
    names = ["figure.png", "figure-2.png", "figure-3.png"]
    assert figure_names(23) == names and figure_names(10) == ["figure.png"] and figure_names(11)[-1] == "figure-2.png"
    assert json.loads((tmp_path / "summary.json").read_text())["figures"] == names
    widths = [Image.open(tmp_path / name).size[0] for name in names]
    assert widths[0] == widths[1] > widths[2]  # 10, 10 and 3 columns
    assert not (tmp_path / "figure-4.png").exists()


def test_maps_get_a_colour_bar():
    """A colour bar is a tall gradient: one pixel column near the right edge with many distinct colours
    (an 8x8 map drawn over an image has a handful per column)."""
    import io

    import numpy as np

    def richest_column(png: bytes) -> int:
        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        right = a[:, int(a.shape[1] * 0.85):]
        return max(len({tuple(p) for p in right[:, c]}) for c in range(right.shape[1]))

    assert richest_column(figure([("m", explanation(4, maps=True))])) > 60
    assert richest_column(figure([("m", explanation(4, maps=False))])) < 30
