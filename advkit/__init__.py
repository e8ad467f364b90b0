"""advkit: evaluate, train and explain adversarially robust image classifiers.

The Python API mirrors the command line, with the same checks and defaults::

    import advkit
    model = advkit.load_model("smallcnn-fmnist")
    data = advkit.load_dataset("fmnist-mini", split="test")
    attack = advkit.create_attack("pgd:steps=20", model, eps="0.1")
    report = advkit.evaluate(model, data, attacks=["pgd", "cw", "aa"], eps="0.1")

Everything behind these names comes from plugins: a plugin imports only
:mod:`advkit.plugin` (its API) and implements the hooks of
:mod:`advkit.hookspecs`. Everything under ``advkit._internal`` is private.
Names resolve lazily, so that ``import advkit`` (and ``advkit --help``) does not
import torch.
"""

from __future__ import annotations

__version__ = "0.3.0"

# name -> the internal module that defines it
_API = {
    # the engines
    "evaluate": "evaluation.engine",
    "train": "training.trainer",
    "explain": "explanation.engine",
    "list_components": "listing",
    # errors
    "UserError": "errors",
    "ThreatViolation": "errors",
    # components by name
    "create_attack": "attack",
    "create_defense": "defense",
    "create_explainer": "explainer",
    "load_model": "models",
    "load_dataset": "data",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    # the objects they return
    "ThreatModel": "threat",
    "parse_eps": "threat",
    "Attack": "attack",
    "ImageClassifier": "models",
    "ImageData": "data",
    "Explanation": "explainer",
    "Report": "evaluation.engine",
}

# Names that were part of this namespace before 0.3, where they live now (they still work, with a warning).
_MOVED = {name: "advkit.plugin" for name in (
    "hookimpl", "Range", "parse_spec", "LibraryAttack", "pgd", "project", "random_start", "frozen",
    "PGDAdversary", "PGDSettings", "Defense", "TrainContext", "ExplainContext", "DataInfo", "TensorImages",
    "save_tensors", "load_tensors", "atomic_write_bytes", "atomic_write_json", "derive_seed", "progress",
    "model_fingerprint", "dist_version", "get_registry",
)}
_RENAMED = {"pgd": "pgd_perturbation", "get_registry": "registry"}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    import importlib

    if name in _API:
        value = getattr(importlib.import_module(f"advkit._internal.{_API[name]}"), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        import warnings

        new = _RENAMED.get(name, name)
        warnings.warn(f"advkit.{name} is deprecated: use {_MOVED[name]}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), new)
    raise AttributeError(f"module 'advkit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


from advkit._internal.deprecations import install as _install  # noqa: E402

_install()
