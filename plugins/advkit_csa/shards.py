"""Chunks of a bank build: one partial file per finished chunk, shared among the ranks of ``torchrun``.

Our own bookkeeping, so that a build is resumable and can be split across
processes *without changing the bank*: the images are cut into fixed chunks
(``chunk`` consecutive bank entries); every chunk is computed by one call of
the estimator, on one rank, exactly as a single process would compute it, and
written atomically to ``nfc-bank-<key>.partial-<chunk>.safetensors``. A rerun
skips the chunks whose file exists, whatever the number of processes was
before. Under ``torchrun`` rank 0's list of missing chunks is shared, and rank
``r`` of ``W`` computes every ``W``-th of them; the ranks then wait for each
other, rank 0 assembles the bank from the chunk files, and the partial files
are removed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from advkit.plugin import all_gather, barrier, world

FIELDS = ("values", "stderr", "real", "imag", "passes")


def partial_path(out: Path, key: str, chunk: int) -> Path:
    return out / f"nfc-bank-{key}.partial-{chunk:05d}.safetensors"


def _load_chunk(out: Path, key: str, chunk: int, rows: int) -> dict | None:
    from advkit.plugin import UserError, load_tensors

    path = partial_path(out, key, chunk)
    if not path.is_file():
        return None
    try:
        t = load_tensors(path)
    except UserError:  # a damaged partial file is recomputed
        return None
    if any(name not in t for name in FIELDS) or t["values"].shape[0] != rows:
        return None
    return t


def chunk_bounds(total: int, chunk: int) -> list[tuple[int, int]]:
    return [(c * chunk, min(total, (c + 1) * chunk)) for c in range(math.ceil(total / chunk))]


def missing_chunks(out: Path, key: str, total: int, chunk: int) -> list[int]:
    """The chunks with no valid partial file, as rank 0 sees them (so that every chunk has exactly one owner)."""
    missing = [c for c, (a, b) in enumerate(chunk_bounds(total, chunk)) if _load_chunk(out, key, c, b - a) is None]
    return all_gather(missing)[0]


def run_chunks(out: Path, key: str, total: int, chunk: int, compute, *, progress: bool, desc: str,
               missing: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Compute the ``missing`` chunks (:func:`missing_chunks` by default) of ``total`` entries with
    ``compute(start, stop) -> dict of (rows, ...) tensors``.

    Every rank returns the assembled ``FIELDS`` over all entries; the partial
    files are removed once rank 0 has read them. The bar (rank 0's) counts images.
    """
    from advkit.plugin import progress as progress_bar
    from advkit.plugin import save_tensors

    rank, size = world()
    bounds = chunk_bounds(total, chunk)
    missing = missing_chunks(out, key, total, chunk) if missing is None else missing
    mine = missing[rank::size]
    suffix = f" (rank 0 of {size}: its share)" if size > 1 else ""
    bar = progress_bar(sum(bounds[c][1] - bounds[c][0] for c in mine), desc + suffix, quiet=not progress or not mine,
                       unit="img")
    try:
        for c in mine:
            a, b = bounds[c]
            result = compute(a, b)
            save_tensors(partial_path(out, key, c), {name: result[name] for name in FIELDS}, {"key": key, "chunk": str(c)})
            bar.update(b - a)
    finally:
        bar.close()
    barrier()
    parts = [_load_chunk(out, key, c, b - a) for c, (a, b) in enumerate(bounds)]
    if any(p is None for p in parts):  # only if files vanished under us
        raise RuntimeError(f"csa bank: chunk files of {key} are missing in {out}")
    return {name: torch.cat([p[name] for p in parts]) for name in FIELDS}


def remove_partials(out: Path, key: str) -> None:
    """Delete the chunk files (rank 0, after the bank is written)."""
    for path in out.glob(f"nfc-bank-{key}.partial-*.safetensors"):
        path.unlink(missing_ok=True)
