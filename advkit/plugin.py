"""The plugin API: every name a plugin may use, and nothing else.

A plugin (built-in or third-party) imports from here only::

    from advkit.plugin import hookimpl, LibraryAttack, UserError

    @hookimpl
    def advkit_register_attacks(register):
        ...

The hooks themselves are documented in :mod:`advkit.hookspecs`; each name below
is documented with its types in docs/plugins.md ("The plugin API"), and a test
checks that the two lists agree. Everything under ``advkit._internal`` may
change between versions; these names change only with a deprecation period.
Names resolve lazily, so importing this module does not import torch.
"""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("advkit")

# name -> the internal module that defines it (the name there, when it differs)
_NAMES: dict[str, str | tuple[str, str]] = {
    # errors
    "UserError": "errors",
    "ThreatViolation": "errors",
    "closest": "errors",
    "unknown": "errors",
    # registries and parameters
    "registry": "plugins",
    "Range": "values",
    "POSITIVE": "values",
    "NON_NEGATIVE": "values",
    "AT_LEAST_ONE": "values",
    "PROBABILITY": "values",
    "parse_spec": "grammar",
    "parse_list": "grammar",
    # the threat model
    "ThreatModel": "threat",
    "parse_eps": "threat",
    # attacks
    "LibraryAttack": "attack",
    "create_attack": "attack",
    "PassCounter": "counter",
    "Passes": "passes",
    "Stage": "passes",
    # audit checks
    "Check": "audit",
    "finding": "audit",
    "AuditContext": "evaluation.audit",
    # the training adversary
    "PGDAdversary": "adversary",
    "PGDSettings": "adversary",
    "pgd_perturbation": "adversary",
    "project": "adversary",
    "random_start": "adversary",
    "l2_normalize": "adversary",
    "l2_project": "adversary",
    "frozen": "adversary",
    # defenses
    "Defense": "defense",
    "TrainContext": "defense",
    "create_defense": "defense",
    # explainers
    "Explanation": "explainer",
    "ExplainContext": "explainer",
    "create_explainer": "explainer",
    # data
    "ImageData": "data",
    "DataInfo": "data",
    "TensorImages": "data",
    "load_dataset": "data",
    # models and checkpoints
    "ImageClassifier": "models",
    "load_model": "models",
    "build_backbone": "models",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "apply_weights": "checkpoint",
    "save_tensors": "checkpoint",
    "load_tensors": "checkpoint",
    "load_weights_file": "checkpoint",
    "atomic_write_bytes": "files",
    "atomic_write_json": "files",
    # run-time helpers
    "derive_seed": "seeds",
    "generator": "seeds",
    "progress": "progress",
    "activity": "progress",
    "format_seconds": "progress",
    "calibrate": "cost",
    "model_fingerprint": "provenance",
    "dist_version": "provenance",
    # torchrun
    "is_main": "distributed",
    "world": "distributed",
    "barrier": "distributed",
    "all_gather": "distributed",
    "all_sum": "distributed",
    "init_distributed": ("distributed", "init_from_env"),
    "local_device": "distributed",
    "shutdown_distributed": ("distributed", "shutdown"),
}

__all__ = ["hookimpl", *_NAMES]


def __getattr__(name: str):
    where = _NAMES.get(name)
    if where is None:
        raise AttributeError(f"advkit.plugin has no name {name!r} (the plugin API is advkit.plugin.__all__)")
    import importlib

    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(f"advkit._internal.{module}"), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
