"""advkit: evaluate, train and explain adversarially robust image classifiers.

The Python API mirrors the command line::

    import advkit
    model = advkit.load_model("smallcnn-fmnist")
    data = advkit.load_dataset("fmnist-mini", split="test")
    attack = advkit.create_attack("pgd", model, eps="0.1")
    report = advkit.evaluate(model, data, attacks=["pgd", "cw", "aa"], eps="0.1")

Everything behind these names comes from plugins (see :mod:`advkit.hookspecs`).

The names in ``__all__`` are the stable API, and the modules they come from
(:data:`CONTRACT`) are the only part of advkit a plugin may import: the
engines (``advkit.evaluation``, ``advkit.training``, ``advkit.explanation``)
and the CLI may change between versions.
"""

from __future__ import annotations

import pluggy

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("advkit")

#: The contract modules: what plugins may import (docs/plugins.md describes each).
CONTRACT = (
    "advkit",
    "advkit.hookspecs",
    "advkit.errors",
    "advkit.registry",
    "advkit.threat",
    "advkit.attack",
    "advkit.adversary",
    "advkit.defense",
    "advkit.explainer",
    "advkit.data",
    "advkit.models",
    "advkit.checkpoint",
    "advkit.runtime",
    "advkit.distributed",
)

_API = {
    # the engines, as functions (their modules are advkit.evaluation / .training / .explanation)
    "evaluate": "advkit.evaluation.engine",
    "train": "advkit.training.trainer",
    "explain": "advkit.explanation",
    "list_components": "advkit.listing",
    # errors
    "UserError": "advkit.errors",
    "ThreatViolation": "advkit.errors",
    # registry
    "Range": "advkit.registry",
    "parse_spec": "advkit.registry",
    "get_registry": "advkit.plugins",
    # threat model
    "ThreatModel": "advkit.threat",
    "parse_eps": "advkit.threat",
    # attacks
    "Attack": "advkit.attack",
    "LibraryAttack": "advkit.attack",
    "create_attack": "advkit.attack",
    "dist_version": "advkit.attack",
    # adversary helpers
    "pgd": "advkit.adversary",
    "project": "advkit.adversary",
    "random_start": "advkit.adversary",
    "frozen": "advkit.adversary",
    "PGDAdversary": "advkit.adversary",
    "PGDSettings": "advkit.adversary",
    # defenses
    "Defense": "advkit.defense",
    "TrainContext": "advkit.defense",
    "create_defense": "advkit.defense",
    # explainers
    "Explanation": "advkit.explainer",
    "ExplainContext": "advkit.explainer",
    "create_explainer": "advkit.explainer",
    # data and models
    "ImageData": "advkit.data",
    "DataInfo": "advkit.data",
    "TensorImages": "advkit.data",
    "load_dataset": "advkit.data",
    "ImageClassifier": "advkit.models",
    "load_model": "advkit.models",
    "load_checkpoint": "advkit.models",
    # checkpoints and run-time helpers
    "save_checkpoint": "advkit.checkpoint",
    "save_tensors": "advkit.checkpoint",
    "load_tensors": "advkit.checkpoint",
    "atomic_write_bytes": "advkit.checkpoint",
    "atomic_write_json": "advkit.checkpoint",
    "derive_seed": "advkit.runtime",
    "progress": "advkit.runtime",
    "model_fingerprint": "advkit.runtime",
}

__all__ = ["hookimpl", "__version__", "CONTRACT", *_API]


def __getattr__(name: str):
    # Lazy, so that ``import advkit`` (and ``advkit --help``) does not import torch.
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advkit' has no attribute {name!r}")
