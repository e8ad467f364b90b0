"""What every engine and plugin shares at run time: seeds, progress bars, the model fingerprint, versions.

One implementation each, so that a report, a training state and a CSA bank
built from the same model carry the same fingerprint, and every seeded random
choice in advkit derives the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import random
import sys

#: The distributions whose versions a report records.
VERSIONED = ("advkit", "torch", "torchvision", "timm", "torchattacks", "adversarial-robustness-toolbox",
             "autoattack", "pyautoattack", "captum", "numpy")


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed that is a pure function of ``seed`` and ``keys`` (strings and numbers)."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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


def progress(total: int, desc: str, *, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr (silent when ``quiet``, off a terminal, or on a non-main rank under torchrun)."""
    from tqdm.auto import tqdm

    from advkit.distributed import is_main

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=True if (quiet or not is_main()) else None)


def model_fingerprint(model) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the model's state-dict tensors."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions() -> dict:
    """Versions of Python, torch and the attack libraries, for reports."""
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
