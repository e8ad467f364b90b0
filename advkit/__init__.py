"""advkit: evaluate, train and explain adversarially robust image classifiers.

The Python API mirrors the command line::

    import advkit
    model = advkit.load_model("smallcnn-fmnist")
    data = advkit.load_dataset("fmnist-mini", split="test")
    attack = advkit.create_attack("pgd", model, eps="0.1")
    report = advkit.evaluate(model, data, attacks=["pgd", "cw", "aa"], eps="0.1")

Everything behind these names comes from plugins (see :mod:`advkit.hookspecs`).
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("advkit")

_API = {
    "load_model": "advkit.models",
    "save_checkpoint": "advkit.checkpoint",
    "load_dataset": "advkit.data",
    "create_attack": "advkit.attacks",
    "create_defense": "advkit.defense",
    "create_explainer": "advkit.explain",
    "list_components": "advkit.listing",
    "ThreatModel": "advkit.threat",
    "UserError": "advkit.errors",
    "evaluate": "advkit.evaluate",
    "train": "advkit.train",
    "explain": "advkit.explain",
}

__all__ = ["hookimpl", "__version__", *_API]


def __getattr__(name: str):
    # Lazy, so that ``import advkit`` (and ``advkit --help``) does not import torch.
    if name in _API:
        import importlib

        module = importlib.import_module(_API[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advkit' has no attribute {name!r}")
