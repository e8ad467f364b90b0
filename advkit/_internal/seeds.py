"""Seeds: one derivation for every seeded random choice in advkit, and the seeding of torch, random and NumPy."""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed that is a pure function of ``seed`` and ``keys`` (strings and numbers)."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def checked_seed(seed) -> int:
    """A seed is a whole number in [0, 2**64) (what torch accepts); anything else is refused."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            if isinstance(seed, str) and seed.strip().lstrip("+-").isdigit():
                seed = int(seed)
            else:
                raise ValueError
        except ValueError:
            from advkit._internal.errors import UserError

            raise UserError(f"seed must be a whole number, got {seed!r}") from None
    if not 0 <= seed < 2**64:
        from advkit._internal.errors import UserError

        raise UserError(f"seed must lie in [0, 2**64), got {seed}")
    return seed


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's ``random`` and NumPy's global generator."""
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def generator(device, seed: int):
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
