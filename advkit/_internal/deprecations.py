"""Module paths of advkit before 0.3, still importable for a while, with a ``DeprecationWarning``.

``import advkit.attack`` (a contract module until 0.2) gives ``advkit._internal.attack``
and says to use :mod:`advkit.plugin` (for plugins) or :mod:`advkit` (for users).
``advkit.runtime`` was split; its old names are gathered in one module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: old module -> internal module(s)
OLD_MODULES = {
    "advkit.errors": "errors", "advkit.registry": "registry", "advkit.plugins": "plugins",
    "advkit.listing": "listing", "advkit.threat": "threat", "advkit.attack": "attack",
    "advkit.adversary": "adversary", "advkit.defense": "defense", "advkit.explainer": "explainer",
    "advkit.data": "data", "advkit.models": "models", "advkit.checkpoint": "checkpoint",
    "advkit.distributed": "distributed", "advkit.evaluation": "evaluation", "advkit.training": "training",
    "advkit.explanation": "explanation", "advkit.cli": "cli", "advkit.runtime": ("seeds", "progress", "cost", "provenance"),
}


def _module(old: str) -> types.ModuleType:
    """A fresh module holding the public names of the internal module(s) ``old`` now lives in."""
    target = OLD_MODULES[old]
    target = (target,) if isinstance(target, str) else target
    merged = types.ModuleType(old, f"deprecated: the names of {', '.join(target)} in advkit._internal")
    for part in target:
        module = importlib.import_module(f"advkit._internal.{part}")
        merged.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    return merged


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        warnings.warn(f"{spec.name} is deprecated: plugins import advkit.plugin, users import advkit "
                      f"(advkit._internal is private)", DeprecationWarning, stacklevel=2)
        return _module(spec.name)

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in OLD_MODULES:
            return importlib.util.spec_from_loader(fullname, _Loader())
        return None


def install() -> None:
    """Make the old module paths importable (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
