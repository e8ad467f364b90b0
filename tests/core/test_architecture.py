"""The core/plugin boundary and the size limits, checked on the source text.

- A plugin imports names from :mod:`advkit.plugin` only, and only those in its
  ``__all__`` (checked name by name); never another plugin, never ``advkit._internal``.
- The core never imports a plugin, and never names a registration: the forbidden
  names are every name and alias the installed plugins register (the live registry).
- No module over 400 lines; no function over 60 lines, outside the named exemptions.

The checks are functions of source text, so their self-tests run on strings and
write nothing into the tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import advkit.plugin
from advkit._internal.plugins import registry
from advkit._internal.registry import KINDS

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir() and p.name.startswith("advkit_"))
PLUGIN_API = set(advkit.plugin.__all__)

#: String literals of the core that are Python names equal to a registered name, each with its reason.
PYTHON_NAMES = {
    "advkit/__init__.py: 'pgd'": "the function advkit.pgd (now advkit.plugin.pgd_perturbation), deprecated",
}

#: Functions allowed over 60 lines, each with its reason.
LONG_FUNCTIONS: dict[str, str] = {}
MAX_FUNCTION, MAX_MODULE = 60, 400


def imports(source: str) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every absolute import in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.lineno, node.module or "", [a.name for a in node.names]))
    return out


def crossings(source: str, where: str, own: str | None) -> list[str]:
    """What ``source`` (of plugin package ``own``, or of the core when None) imports across the boundary."""
    bad = []
    for line, module, names in imports(source):
        top, at = module.split(".")[0], f"{where}:{line}"
        if own is None:
            if top.startswith("advkit_"):
                bad.append(f"{at}: the core imports plugin {module}")
        elif top.startswith("advkit_") and top != own:
            bad.append(f"{at}: plugin {own} imports another plugin, {module}")
        elif top == "advkit" and module != "advkit.plugin":
            bad.append(f"{at}: plugin {own} imports {module}: plugins import from advkit.plugin only")
        elif module == "advkit.plugin":
            bad += [f"{at}: plugin {own} imports {n!r}, which is not in the plugin API (advkit.plugin.__all__)"
                    for n in names if n not in PLUGIN_API]
    return bad


def registered_names() -> set[str]:
    """Every name and alias registered by the installed plugins, of every kind."""
    return {n for kind in KINDS for e in registry(kind) for n in (e.name, *e.aliases)}


def named_registrations(source: str, where: str, names: set[str]) -> list[str]:
    """String literals of ``source`` that are a registered name (docstrings and comments don't count)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [f"{where}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and node.value.strip().lower() in names]


def long_functions(source: str, where: str, limit: int = MAX_FUNCTION) -> dict[str, int]:
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
            out[f"{where}:{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def sources(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, path.read_text(), str(path.relative_to(ROOT))


def test_plugins_import_only_the_plugin_api():
    bad = []
    for name in PLUGINS:
        for _path, text, where in sources(f"plugins/{name}"):
            bad += crossings(text, where, name)
    for path, text, where in sources("examples"):
        bad += crossings(text, where, path.relative_to(ROOT / "examples").parts[1])
    assert not bad, "\n".join(bad)


def test_core_imports_no_plugin_and_names_no_registration():
    names = registered_names()
    assert {"pgd", "aa", "smallcnn", "fmnist-mini", "trades", "ig"} <= names  # the registry is live
    bad = []
    for _path, text, where in sources("advkit"):
        bad += crossings(text, where, None) + named_registrations(text, where, names)
    bad = [b for b in bad if b.split(":")[0] + ": " + b.split(": ", 1)[1] not in PYTHON_NAMES]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from advkit._internal.training.trainer import train\n", "plugins import from advkit.plugin only"),
    ("import advkit._internal.explanation.engine\n", "plugins import from advkit.plugin only"),
    ("from advkit import evaluate\n", "plugins import from advkit.plugin only"),
    ("from advkit_training.pgd_at import PGDAT\n", "imports another plugin"),
    ("from advkit.plugin import Trainer\n", "'Trainer', which is not in the plugin API"),
    ("from advkit.plugin import UserError, seed_everything\n", "'seed_everything', which is not in the plugin API"),
])
def test_the_check_catches_each_kind_of_crossing(source, expected):
    found = crossings(source, "probe.py", "advkit_part")
    assert found and expected in found[0]
    assert not crossings("from advkit.plugin import UserError, hookimpl\nfrom advkit_part.cam import x\n",
                         "probe.py", "advkit_part")


def test_the_check_catches_the_core_importing_or_naming_a_plugin():
    assert "imports plugin" in crossings("from advkit_models import smallcnn\n", "core.py", None)[0]
    names = {"pgd", "fmnist-mini"}
    source = '"""pgd is named in a docstring"""\nX = ("pgd", "cw")  # "fmnist-mini" in a comment\nY = "PGD "\n'
    assert sorted(named_registrations(source, "core.py", names)) == ["core.py:2: 'pgd'", "core.py:3: 'PGD '"]


def test_plugin_api_names_resolve():
    for name in advkit.plugin.__all__:
        assert getattr(advkit.plugin, name) is not None, name
    with pytest.raises(AttributeError, match="not in|has no name"):
        advkit.plugin.seed_everything  # noqa: B018


def test_user_api_names_resolve_and_old_names_warn():
    for name in advkit.__all__:
        assert getattr(advkit, name) is not None, name
    with pytest.warns(DeprecationWarning, match="advkit.pgd is deprecated: use advkit.plugin.pgd_perturbation"):
        assert advkit.pgd is advkit.plugin.pgd_perturbation


def test_old_module_paths_import_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("advkit.attack", None)
    with pytest.warns(DeprecationWarning, match="advkit.attack is deprecated"):
        old = importlib.import_module("advkit.attack")
    assert old.create_attack is advkit.create_attack


def test_engine_functions_survive_importing_engine_modules():
    """``advkit.evaluate``/``train``/``explain`` stay functions whatever engine module was imported."""
    import importlib

    for module in ("advkit._internal.evaluation.engine", "advkit._internal.training.trainer",
                   "advkit._internal.explanation.engine", "advkit._internal.listing"):
        importlib.import_module(module)
    for name in ("evaluate", "train", "explain"):
        assert callable(getattr(advkit, name)) and not isinstance(getattr(advkit, name), type(advkit)), name


def test_modules_stay_small():
    big = {where: n for _, text, where in sources("advkit", "plugins") if (n := len(text.splitlines())) > MAX_MODULE}
    assert not big, big


def test_functions_fit_on_a_screen():
    """No function over 60 lines in the core, the CLI or the plugins, but the named exemptions."""
    long = {}
    for _, text, where in sources("advkit", "plugins"):
        long.update(long_functions(text, where))
    long = {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert not long, long
    assert long_functions("def f():\n" + "    x = 1\n" * 70, "probe.py") == {"probe.py:f": 71}
    stale = set(LONG_FUNCTIONS) - {k for _, t, w in sources("advkit", "plugins") for k in long_functions(t, w)}
    assert not stale, f"exemptions no longer needed: {stale}"

