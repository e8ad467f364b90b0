"""The ``freq-shapley`` explainer: frequency Shapley values, PFC and NFC reconstructions.

``maps`` (N, 1, H, W): each player's value spread over its block of the
centred spectrum (DC cell 0). ``images`` (2N, C, H, W): the positive-frequency
reconstruction (players with ``phi > 0`` plus the DC cell) of every image,
then the negative one (``phi < 0`` plus the DC cell); the DC cell is kept so
that both are images rather than zero-mean residues. ``scores``: the largest
and mean standard error, ``v_all``/``v_none`` (the game on all players and on
the DC cell only), ``v_pfc``/``v_nfc`` (the game on the two reconstructions)
and the permutations used. With ``figure=PATH`` a figure in the layout of the
paper (image, PFC, NFC, value heatmap per row) is also written there.
"""

from __future__ import annotations

import torch

from advkit.plugin import Explanation


def reconstructions(x: torch.Tensor, values: torch.Tensor, players) -> tuple[torch.Tensor, torch.Tensor]:
    """PFC and NFC images (N, C, H, W) in [0, 1], the DC cell kept in both."""
    spec = torch.fft.fft2(x.float())
    out = []
    for members in (values > 0, values < 0):
        mask = players.coalition_mask(members.to(x.device))
        out.append(torch.fft.ifft2(spec * mask[:, None]).real.clamp(0, 1))
    return out[0], out[1]


def seed_figure(x: torch.Tensor, pfc: torch.Tensor, nfc: torch.Tensor, heat: torch.Tensor, path, titles=None) -> None:
    """Rows of: image, PFC reconstruction, NFC reconstruction, heatmap of the values over the centred spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors
    import matplotlib.pyplot as plt

    from advkit.plugin import atomic_write_bytes

    n = x.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.9 * n), dpi=110, squeeze=False)
    heads = ("image", "PFC", "NFC", "Shapley values, centred spectrum (symlog)")

    def show(ax, t):
        a = t.detach().cpu().float()
        a = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)

    for i in range(n):
        show(axes[i][0], x[i])
        show(axes[i][1], pfc[i])
        show(axes[i][2], nfc[i])
        h = heat[i, 0].detach().cpu().float().numpy()
        lim = float(abs(h).max()) or 1.0
        norm = matplotlib.colors.SymLogNorm(linthresh=lim / 100, vmin=-lim, vmax=lim)
        im = axes[i][3].imshow(h, cmap="coolwarm", norm=norm)
        fig.colorbar(im, ax=axes[i][3], fraction=0.046, pad=0.04)
        for j in range(4):
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            if i == 0:
                axes[i][j].set_title(heads[j], fontsize=7)
        if titles is not None:
            axes[i][0].set_ylabel(titles[i], fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


class FreqShapley:
    """Shapley values of 2-D DFT blocks (permutations: antithetic pairs, control variate, adaptive sampling; or
    the bank's gradient estimator); PFC/NFC reconstructions."""

    def __init__(self, permutations: int = 64, target_se: float | None = None, grid: str | None = None,
                 value: str = "prob", antithetic: bool = True, control_variate: bool = True,
                 adaptive: bool = True, estimator: str = "permutation", pairs: int = 128, batch_size: int = 1024,
                 seed: int = 0, progress: bool = True, figure: str | None = None):
        from advkit.plugin import UserError
        from advkit_csa.grid import parse_grid
        from advkit_csa.shapley import VALUES

        if value not in VALUES:
            raise UserError(f"freq-shapley: value must be one of {VALUES}, got {value!r}")
        if estimator not in ("permutation", "gradient"):
            raise UserError(f"freq-shapley: estimator must be permutation or gradient, got {estimator!r}")
        if int(permutations) < 1 or int(pairs) < 2:
            raise UserError(f"freq-shapley: permutations must be >= 1 and pairs >= 2, got {permutations!r} and {pairs!r}")
        self.grid = parse_grid(grid)
        self.estimator = estimator
        if estimator == "gradient":  # the bank's estimator: right signs at a fraction of the cost, values biased
            self.kw = dict(pairs=int(pairs), value=value, batch_size=int(batch_size), seed=int(seed), progress=bool(progress))
        else:
            self.kw = dict(permutations=int(permutations), target_se=target_se, value=value, antithetic=bool(antithetic),
                           control_variate=bool(control_variate), adaptive=bool(adaptive), batch_size=int(batch_size),
                           seed=int(seed), progress=bool(progress))
        self.figure = figure

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, ctx=None) -> Explanation:
        from advkit_csa.linearized import gradient_shapley
        from advkit_csa.shapley import _value, frequency_shapley

        estimate = gradient_shapley if self.estimator == "gradient" else frequency_shapley
        r = estimate(model, x, y, grid=self.grid, **self.kw)
        pfc, nfc = reconstructions(x, r.values, r.players)
        with torch.inference_mode():
            dev = next(iter(model.parameters())).device
            logits = model(torch.cat([pfc, nfc]).to(dev)).float().cpu()
        yy = torch.cat([y, y]).cpu().long()
        v = torch.stack([_value(logits[i], yy[i], self.kw["value"]) for i in range(len(yy))])
        n = x.shape[0]
        heat = r.spectrum("values")
        scores = {"max_se": r.stderr.max(1).values, "mean_se": r.stderr.mean(1), "v_all": r.v_full, "v_none": r.v_empty,
                  "v_pfc": v[:n], "v_nfc": v[n:], "permutations": r.permutations.float(),
                  "efficiency_gap": r.efficiency_gap()}
        meta = {"settings": r.settings, "players": r.players.describe(),
                "maps": "per-player Shapley values on the centred spectrum (fftshift layout), DC cell 0",
                "maps_space": "spectrum",
                "images": "PFC reconstructions (DC cell kept); extra_NFC: NFC reconstructions (DC cell kept)",
                "images_title": "PFC",
                "forward_passes": int(r.passes.sum())}
        if self.figure:
            seed_figure(x, pfc, nfc, heat, self.figure)
            meta["figure"] = str(self.figure)
        return Explanation("freq-shapley", x.detach().cpu(), maps=heat, images=pfc.cpu(), extras={"NFC": nfc.cpu()},
                           scores=scores, meta=meta)
