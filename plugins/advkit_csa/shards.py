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

from advkit import distributed as D

FIELDS = ("values", "stderr", "real", "imag", "passes")


def partial_path(out: Path, key: str, chunk: int) -> Path:
    return out / f"nfc-bank-{key}.partial-{chunk:05d}.safetensors"


def _load_chunk(out: Path, key: str, chunk: int, rows: int) -> dict | None:
    from advkit.checkpoint import load_tensors
    from advkit.errors import UserError

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


def run_chunks(out: Path, key: str, total: int, chunk: int, compute, *, progress: bool, desc: str) -> dict[str, torch.Tensor]:
    """Compute the missing chunks of ``total`` entries with ``compute(start, stop) -> dict of (rows, ...) tensors``.

    Every rank returns the assembled ``FIELDS`` over all entries; the partial
    files are removed once rank 0 has read them.
    """
    rank, world = D.world()
    n_chunks = math.ceil(total / chunk)
    bounds = [(c * chunk, min(total, (c + 1) * chunk)) for c in range(n_chunks)]
    missing = [c for c, (a, b) in enumerate(bounds) if _load_chunk(out, key, c, b - a) is None]
    missing = D.all_gather(missing)[0]  # rank 0's view, so that every chunk has exactly one owner
    mine = missing[rank::world]
    bar = None
    if progress and mine:
        from tqdm.auto import tqdm

        suffix = f" [rank {rank}/{world}]" if world > 1 else ""
        done = total - sum(bounds[c][1] - bounds[c][0] for c in missing)
        bar = tqdm(total=total if world == 1 else sum(bounds[c][1] - bounds[c][0] for c in mine),
                   initial=done if world == 1 else 0, desc=desc + suffix, unit="img")
    from advkit.checkpoint import save_tensors

    try:
        for c in mine:
            a, b = bounds[c]
            result = compute(a, b)
            save_tensors(partial_path(out, key, c), {name: result[name] for name in FIELDS}, {"key": key, "chunk": str(c)})
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    D.barrier()
    parts = [_load_chunk(out, key, c, b - a) for c, (a, b) in enumerate(bounds)]
    if any(p is None for p in parts):  # only if files vanished under us
        raise RuntimeError(f"csa bank: chunk files of {key} are missing in {out}")
    return {name: torch.cat([p[name] for p in parts]) for name in FIELDS}


def remove_partials(out: Path, key: str) -> None:
    """Delete the chunk files (rank 0, after the bank is written)."""
    for path in out.glob(f"nfc-bank-{key}.partial-*.safetensors"):
        path.unlink(missing_ok=True)
