"""Parsing of the player grid as given on the command line: ``14``, ``14x14``, ``(7, 7)`` or None."""

from __future__ import annotations

from advkit.plugin import UserError


def parse_grid(grid) -> tuple[int, int] | None:
    if grid is None or (isinstance(grid, str) and grid.strip().lower() in ("", "none", "default")):
        return None
    if isinstance(grid, int):
        return (grid, grid)
    if isinstance(grid, (tuple, list)) and len(grid) == 2:
        return (int(grid[0]), int(grid[1]))
    text = str(grid).strip().lower().replace("*", "x")
    try:
        parts = [int(t) for t in text.split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise UserError(f"grid must look like 14 or 14x14, got {grid!r}")
    return (parts[0], parts[1])
