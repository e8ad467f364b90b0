"""Where a result comes from: the model fingerprint and the versions of the libraries involved."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform

#: The distributions every report records; the libraries plugins declare they wrap are added to them.
VERSIONED = ("advkit", "torch", "torchvision", "numpy")


def model_fingerprint(model) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the model's state-dict tensors."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions() -> dict:
    """Versions of Python, torch and every library a registered plugin wraps, for reports."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import KINDS

    wrapped = [dist for kind in KINDS for e in registry(kind) for dist in e.library]
    out = {"python": platform.python_version()}
    for pkg in dict.fromkeys([*VERSIONED, *wrapped]):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def dist_version(name: str) -> str:
    """Installed version of a distribution, or ``"?"``."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "?"
