"""Frequency players: blocks of the centred 2-D DFT spectrum, shared across channels.

The centred spectrum (``fftshift`` of ``torch.fft.fft2``) of an ``H x W`` image
is cut into a ``grid_h x grid_w`` grid of cells, pixel ``(r, c)`` falling in
cell ``(r * grid_h // H, c * grid_w // W)`` -- the nearest-neighbour upsampling
of a ``grid_h x grid_w`` mask that the reference uses (16x16 cells of 2x2
frequencies on 32x32 images). The cell holding the DC component (the centre,
``(H // 2, W // 2)`` after the shift) is present in every coalition and is
not a player, which is what the reference's ``static_center`` does (its centre
player always has a zero marginal); the other cells are the ``P`` players,
numbered row-major.

A coalition ``S`` is the image ``clamp(real(IFFT(mask_S * F(x))), 0, 1)``. As
the inverse DFT and the real part are linear, the unclamped image is
``base + sum_{k in S} comp_k`` with ``base`` the reconstruction from the centre
cell and ``comp_k`` that from player ``k``: :meth:`components` computes them once
per image, and a permutation's chain of coalitions is then a cumulative sum.
"""

from __future__ import annotations

from functools import cached_property

import torch

from advkit.plugin import UserError


def default_grid(h: int, w: int) -> tuple[int, int]:
    """2x2 frequency blocks: 16x16 cells for 32x32 images, 14x14 for 28x28."""
    return max(1, h // 2), max(1, w // 2)


class FrequencyPlayers:
    """The player layout for ``(H, W)`` images and a ``(grid_h, grid_w)`` grid."""

    def __init__(self, size: tuple[int, int], grid: tuple[int, int] | None = None):
        self.h, self.w = int(size[0]), int(size[1])
        gh, gw = grid if grid is not None else default_grid(self.h, self.w)
        self.grid = (int(gh), int(gw))
        if not (1 <= self.grid[0] <= self.h and 1 <= self.grid[1] <= self.w):
            raise UserError(f"frequency grid {self.grid} must lie between 1x1 and the image size {self.h}x{self.w}")
        if self.grid[0] * self.grid[1] < 2:
            raise UserError("the frequency grid needs at least 2 cells (one is the kept centre)")

    @cached_property
    def cell_map(self) -> torch.Tensor:
        """(H, W) long: the cell of each frequency of the *centred* spectrum."""
        gh, gw = self.grid
        rows = torch.arange(self.h) * gh // self.h
        cols = torch.arange(self.w) * gw // self.w
        return rows[:, None] * gw + cols[None, :]

    @property
    def centre_cell(self) -> int:
        return int(self.cell_map[self.h // 2, self.w // 2])

    @property
    def num_players(self) -> int:
        return self.grid[0] * self.grid[1] - 1

    @cached_property
    def player_cells(self) -> torch.Tensor:
        """(P,) long: the grid cell of each player (row-major, centre skipped)."""
        cells = torch.arange(self.grid[0] * self.grid[1])
        return cells[cells != self.centre_cell]

    @cached_property
    def masks(self) -> torch.Tensor:
        """(P + 1, H, W) bool in the *unshifted* layout of ``fft2``: the players, then the centre cell."""
        cells = torch.cat([self.player_cells, torch.tensor([self.centre_cell])])
        centred = self.cell_map[None] == cells[:, None, None]
        return torch.fft.ifftshift(centred, dim=(-2, -1))

    def components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-player reconstructions of ``x`` (N, C, H, W): ``comps`` (N, P, C, H, W) and ``base`` (N, C, H, W)."""
        spec = torch.fft.fft2(x.float())
        masks = self.masks.to(x.device)
        parts = torch.fft.ifft2(spec[:, None] * masks[None, :, None]).real
        return parts[:, :-1].contiguous(), parts[:, -1].contiguous()

    def coalition_mask(self, members: torch.Tensor) -> torch.Tensor:
        """(..., H, W) float mask (unshifted layout, centre included) of boolean memberships (..., P)."""
        m = members.to(torch.float32)
        cell_values = torch.ones(*m.shape[:-1], self.grid[0] * self.grid[1], device=m.device)
        cell_values[..., self.player_cells.to(m.device)] = m
        centred = cell_values[..., self.cell_map.to(m.device)]
        return torch.fft.ifftshift(centred, dim=(-2, -1))

    def to_grid(self, values: torch.Tensor, centre: float = 0.0) -> torch.Tensor:
        """Per-player values (..., P) as a (..., grid_h, grid_w) grid, the centre cell set to ``centre``."""
        out = torch.full((*values.shape[:-1], self.grid[0] * self.grid[1]), float(centre), dtype=values.dtype, device=values.device)
        out[..., self.player_cells.to(values.device)] = values
        return out.view(*values.shape[:-1], *self.grid)

    def to_spectrum(self, values: torch.Tensor, centre: float = 0.0) -> torch.Tensor:
        """Per-player values (..., P) upsampled to the *centred* (H, W) spectrum, as displayed."""
        flat = self.to_grid(values, centre).flatten(-2)
        return flat[..., self.cell_map.to(values.device)]

    def describe(self) -> dict:
        return {"image": [self.h, self.w], "grid": list(self.grid), "players": self.num_players,
                "centre_cell": self.centre_cell}
