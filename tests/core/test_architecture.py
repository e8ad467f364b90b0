"""The core/plugin boundary, checked on the source: plugins import only the contract, the core never a plugin."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import advkit

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir() and p.name.startswith("advkit_"))
# Names of registrations that belong to plugins: the core must not know them (the CLI's default suite
# "pgd,cw,aa" is a user-facing default, and distribution names in version reports are not registrations).
PLUGIN_NAMES = re.compile(r"""["'](aa-rand|square|apgd-ce|apgd-t|fab|fab-t|deepfool|timm/)["']|'timm'""")


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import in ``path`` (relative imports resolved to their package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                continue  # relative: inside its own package
            out.append((node.lineno, node.module or "", [a.name for a in node.names]))
    return out


def crossings(path: Path, own: str | None) -> list[str]:
    """What ``path`` (in plugin package ``own``, or in the core when None) imports across the boundary."""
    bad = []
    for line, module, names in imports(path):
        top = module.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}"
        if own is None:
            if top.startswith("advkit_"):
                bad.append(f"{where}: the core imports plugin {module}")
            continue
        if top.startswith("advkit_") and top != own:
            bad.append(f"{where}: plugin {own} imports another plugin, {module}")
        elif top == "advkit" and module not in advkit.CONTRACT:
            bad.append(f"{where}: plugin {own} imports {module}, which is not a contract module")
        elif module == "advkit":
            bad += [f"{where}: plugin {own} imports advkit.{n}, which advkit does not export"
                    for n in names if n not in advkit.__all__ and f"advkit.{n}" not in advkit.CONTRACT]
    return bad


def test_plugins_import_only_the_contract():
    bad = []
    for name in PLUGINS:
        for path in sorted((ROOT / "plugins" / name).rglob("*.py")):
            bad += crossings(path, name)
    for path in sorted((ROOT / "examples").rglob("*.py")):
        bad += crossings(path, path.relative_to(ROOT / "examples").parts[1])
    assert not bad, "\n".join(bad)


def test_core_imports_no_plugin():
    bad = []
    for path in sorted((ROOT / "advkit").rglob("*.py")):
        bad += crossings(path, None)
    assert not bad, "\n".join(bad)


def test_core_names_no_plugin_registration():
    bad = []
    for path in sorted((ROOT / "advkit").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if PLUGIN_NAMES.search(code):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from advkit.training.trainer import train\n", "not a contract module"),
    ("from advkit.cli import RunOptions\n", "not a contract module"),
    ("import advkit.explanation\n", "not a contract module"),
    ("from advkit_training.pgd_at import PGDAT\n", "imports another plugin"),
    ("from advkit import Trainer\n", "does not export"),
])
def test_the_check_catches_each_kind_of_crossing(tmp_path, source, expected):
    path = ROOT / "plugins" / "advkit_part" / "_probe_crossing.py"
    path.write_text(source)
    try:
        found = crossings(path, "advkit_part")
    finally:
        path.unlink()
    assert found and expected in found[0]


def test_the_check_catches_the_core_importing_a_plugin():
    path = ROOT / "advkit" / "_probe_crossing.py"
    path.write_text("from advkit_models import smallcnn\n")
    try:
        found = crossings(path, None)
    finally:
        path.unlink()
    assert found and "imports plugin" in found[0]


def test_contract_modules_exist_and_export_what_all_says():
    import importlib

    for module in advkit.CONTRACT:
        importlib.import_module(module)
    for name in advkit.__all__:
        assert getattr(advkit, name) is not None, name


def test_engine_functions_survive_importing_engine_modules():
    """``advkit.evaluate``/``train``/``explain`` stay functions whatever engine module was imported."""
    import importlib

    advkit.list_components("explainers")
    for module in ("advkit.evaluation.engine", "advkit.evaluation.report", "advkit.training.trainer",
                   "advkit.explanation", "advkit.explainer", "advkit.listing"):
        importlib.import_module(module)
    from advkit.evaluation.engine import Report  # noqa: F401

    for name in ("evaluate", "train", "explain"):
        assert callable(getattr(advkit, name)) and not isinstance(getattr(advkit, name), type(advkit)), name


def test_engine_modules_stay_small():
    """No core module over ~400 lines (the engines keep only their loops)."""
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "advkit").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 420}
    assert not big, big


def test_engine_functions_fit_on_a_screen():
    """No function over ~80 lines in the engines (evaluation, training, explanation)."""
    paths = [*(ROOT / "advkit" / "evaluation").rglob("*.py"), *(ROOT / "advkit" / "training").rglob("*.py"),
             ROOT / "advkit" / "explanation.py"]
    long = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, long
