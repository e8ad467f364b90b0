"""The plugin system: entry-point loading, the allow-list, isolation of broken plugins, a real third-party plugin."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advkit._internal import plugins
from advkit._internal.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "advkit-plugin-example"


def advkit(*args, env=None, check=True):
    e = {**os.environ, **(env or {})}
    r = subprocess.run([sys.executable, "-m", "advkit", *args], capture_output=True, text=True, env=e, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_builtins_are_entry_points():
    eps = {ep.name: ep.value for ep in md.entry_points(group="advkit")}
    for name, module in {"models": "advkit_models", "datasets": "advkit_datasets", "torchattacks": "advkit_torchattacks", "art": "advkit_art"}.items():
        assert eps.get(name) == module
    loaded = {p.name: p for p in plugins.plugins()}
    assert not loaded["models"].error and loaded["models"].package == "advkit"


def test_allow_list(monkeypatch):
    try:
        monkeypatch.setenv("ADVKIT_LOAD_PLUGINS", "models")
        plugins.reset()
        assert [p.name for p in plugins.plugins()] == ["models"]
        assert len(plugins.registry("backbone")) > 0 and len(plugins.registry("attack")) == 0
        monkeypatch.setenv("ADVKIT_LOAD_PLUGINS", "")
        plugins.reset()
        assert plugins.plugins() == [] and len(plugins.registry("dataset")) == 0
    finally:
        monkeypatch.undo()
        plugins.reset()
        plugins.load_plugins()


def _fake_distribution(tmp_path: Path, name: str, module_source: str) -> dict:
    """A plugin installed as a bare dist-info on PYTHONPATH, found like any other distribution."""
    (tmp_path / f"{name}.py").write_text(module_source)
    info = tmp_path / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[advkit]\n{name} = {name}\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_plugin_that_raises_on_import_is_isolated(tmp_path):
    env = _fake_distribution(tmp_path, "advkit_broken", "raise RuntimeError('boom at import')\n")
    r = advkit("list", "plugins", "--json", env=env)
    assert "plugin 'advkit_broken' (advkit_broken) failed to load: RuntimeError: boom at import" in r.stderr
    listing = json.loads(r.stdout)["plugins"]
    status = {p["name"]: p.get("error", "") for p in listing}
    assert "boom" in status["advkit_broken"] and status["models"] == ""
    r = advkit("list", "backbones", env=env)
    assert "smallcnn" in r.stdout


def test_plugin_that_exits_at_import_is_named_and_skipped(tmp_path):
    env = _fake_distribution(tmp_path, "advkit_quitter", "import sys\nsys.exit(3)\n")
    r = advkit("list", "backbones", env=env)
    assert "plugin 'advkit_quitter' (advkit_quitter) failed to load: SystemExit: 3" in r.stderr
    assert "smallcnn" in r.stdout


def test_plugin_that_raises_in_a_hook_is_isolated(tmp_path):
    source = (
        "import advkit\n"
        "@advkit.plugin.hookimpl\n"
        "def advkit_register_attacks(register):\n"
        "    raise ValueError('bad hook')\n"
    )
    env = _fake_distribution(tmp_path, "advkit_badhook", source)
    r = advkit("list", "attacks", env=env)
    assert "plugin 'advkit_badhook' failed in advkit_register_attacks and is skipped: ValueError: bad hook" in r.stderr
    assert "pgd" in r.stdout


def _ghost_module():
    """A plugin that registers in three hooks and a command, then raises in its dataset hook."""
    import types

    import click

    import advkit.plugin

    module = types.ModuleType("advkit_ghost")

    def advkit_register_attacks(register):
        register("ghost-attack", lambda model, threat: None)

    def advkit_register_backbones(register):
        register("ghostnet", lambda num_classes=10: None)

    def advkit_register_datasets(register):
        register("ghost-data", lambda split, data_dir=None: None)
        raise ValueError("bad dataset hook")

    def advkit_register_commands(cli):
        @cli.command("ghost-cmd")
        def ghost_cmd():
            click.echo("ghost ran")

    for fn in (advkit_register_attacks, advkit_register_backbones, advkit_register_datasets, advkit_register_commands):
        setattr(module, fn.__name__, advkit.plugin.hookimpl(fn))
    return module


def test_plugin_failing_in_a_later_hook_is_marked_failed_and_keeps_nothing():
    """Its attack, backbone and command, registered in hooks that did not fail, are all gone; it is FAILED."""
    from click.testing import CliRunner

    from advkit._internal.cli import cli
    from advkit._internal.listing import format_listing, list_components
    from advkit._internal.models import load_model

    before = dict(cli.commands)
    try:
        plugins.load_plugins()
        plugins.register_plugin(_ghost_module(), plugins.PluginInfo("ghost", "advkit_ghost", "advkit-ghost", "0.1"))
        plugins.register_commands(cli)
        assert "ghost-cmd" in cli.commands  # the failure is not known before the registries are filled
        r = CliRunner().invoke(cli, ["list", "plugins"])
        line = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("ghost ")]
        assert line and "FAILED: ValueError in advkit_register_datasets: bad dataset hook" in line[0]
        assert "plugin 'ghost' failed in advkit_register_datasets and is skipped" in r.stderr
        listing = list_components()
        names = {e["name"] for kind, entries in listing.items() if kind != "plugins" for e in entries}
        assert not names & {"ghost-attack", "ghostnet", "ghost-data"} and {"pgd", "smallcnn"} <= names
        assert "ghost" not in format_listing({k: v for k, v in listing.items() if k != "plugins"})
        with pytest.raises(UserError, match="unknown backbone 'ghostnet'"):
            load_model("ghostnet")
        assert "ghost-cmd" not in cli.commands
    finally:
        plugins.reset()
        cli.commands.clear()
        cli.commands.update(before)
        plugins.load_plugins()


def test_command_of_a_plugin_found_failed_later_refuses_to_run():
    import click
    from click.testing import CliRunner

    group = click.Group("probe")
    try:
        plugins.load_plugins()
        plugins.register_plugin(_ghost_module(), plugins.PluginInfo("ghost", "advkit_ghost", "advkit-ghost", "0.1"))
        plugins.register_commands(group)
        r = CliRunner().invoke(group, ["ghost-cmd"])  # filling the registries happens on the call
        assert r.exit_code != 0 and "ghost ran" not in r.stdout
        assert isinstance(r.exception, UserError)
        assert "command 'ghost-cmd' comes from plugin 'ghost', which failed: ValueError" in str(r.exception)
    finally:
        plugins.reset()
        plugins.load_plugins()


def test_plugin_failing_in_its_command_hook_adds_no_command():
    import types

    import click

    import advkit.plugin

    module = types.ModuleType("advkit_halfcmd")

    def advkit_register_commands(cli):
        cli.add_command(click.Command("half-cmd", callback=lambda: None))
        raise RuntimeError("after one command")

    module.advkit_register_commands = advkit.plugin.hookimpl(advkit_register_commands)
    group = click.Group("probe")
    try:
        plugins.load_plugins()
        plugins.register_plugin(module, plugins.PluginInfo("halfcmd", "advkit_halfcmd", "advkit-halfcmd", "1.0"))
        plugins.register_commands(group)
        assert "half-cmd" not in group.commands
        info = {p.name: p for p in plugins.plugins()}["halfcmd"]
        assert info.error == "RuntimeError in advkit_register_commands: after one command"
    finally:
        plugins.reset()
        plugins.load_plugins()


def test_registration_declares_the_wrapped_library():
    """The listing shows the library a component wraps, with its installed version, not advkit's."""
    import importlib.metadata as md

    from click.testing import CliRunner

    from advkit._internal.cli import cli

    pgd = plugins.registry("attack").get("pgd").as_dict()
    assert pgd["library"] == {"name": "torchattacks", "version": md.version("torchattacks")}
    assert pgd["package"] == "advkit"
    art = plugins.registry("attack").get("art.pgd").as_dict()["library"]
    assert art == {"name": "adversarial-robustness-toolbox", "version": md.version("adversarial-robustness-toolbox")}
    assert plugins.registry("explainer").get("ig").as_dict()["library"]["name"] == "captum"
    assert plugins.registry("backbone").get("timm").as_dict()["library"]["version"] == md.version("timm")
    aa = plugins.registry("attack").get("aa").as_dict()["library"]
    assert aa["name"] in ("autoattack", "pyautoattack", "torchattacks") and aa["version"] == md.version(aa["name"])
    assert plugins.registry("backbone").get("smallcnn").as_dict()["library"] is None
    out = CliRunner().invoke(cli, ["list", "attacks", "pgd"]).stdout
    assert f"pgd (aka pgd-linf)  [torchattacks {md.version('torchattacks')}; plugin torchattacks]" in out


def test_library_must_name_distributions():
    from advkit._internal.registry import Entry

    with pytest.raises(TypeError, match="library must be"):
        plugins._entry("attack", plugins.PluginInfo("p", "p", "", ""), "x", lambda model, threat: None, library=3)
    entry = Entry("attack", "x", print, "p", library=("no-such-dist-xyz", "torchattacks"))
    assert entry.wrapped()["name"] == "torchattacks"
    assert Entry("attack", "x", print, "p", library=("no-such-dist-xyz",)).wrapped() == \
        {"name": "no-such-dist-xyz", "version": "not installed"}


def _shadow_module():
    """A third-party plugin registering an attack under a name torchattacks' plugin already holds."""
    import types

    import advkit.plugin

    module = types.ModuleType("advkit_shadow")

    def advkit_register_attacks(register):
        def pgd(model, threat, steps: int = 1):
            """A third-party attack under a taken name."""
            return lambda x, y: x

        register("pgd", pgd)

    module.advkit_register_attacks = advkit.plugin.hookimpl(advkit_register_attacks)
    return module


@pytest.mark.parametrize("prefer, holder", [("", "torchattacks"), ("shadow.pgd", "shadow")])
def test_a_taken_name_stays_with_the_first_unless_advkit_prefer_hands_it_over(monkeypatch, prefer, holder):
    warned = []
    monkeypatch.setenv("ADVKIT_PREFER", prefer)
    monkeypatch.setattr(plugins, "_warn_once", warned.append)
    try:
        plugins.reset()
        plugins.load_plugins()
        plugins.register_plugin(_shadow_module(), plugins.PluginInfo("shadow", "advkit_shadow", "advkit-shadow", "0.1"))
        reg = plugins.registry("attack")
        assert reg.get("pgd").provider == holder
        assert reg.get("shadow.pgd").provider == "shadow" and reg.get("torchattacks.pgd").provider == "torchattacks"
        said = " ".join(warned)
        assert "'pgd'" in said and ("ADVKIT_PREFER" in said)  # the collision, or the hand-over, is reported
    finally:
        monkeypatch.undo()
        plugins.reset()
        plugins.load_plugins()


def test_an_undeclared_capability_is_refused_at_registration():
    import types

    import advkit.plugin

    module = types.ModuleType("advkit_odd")

    def advkit_register_attacks(register):
        register("odd", lambda model, threat: None, quantum=True)

    module.advkit_register_attacks = advkit.plugin.hookimpl(advkit_register_attacks)
    try:
        plugins.load_plugins()
        plugins.register_plugin(module, plugins.PluginInfo("odd", "advkit_odd", "advkit-odd", "0.1"))
        assert "odd" not in plugins.registry("attack")
        odd = next(p for p in plugins.plugins() if p.name == "odd")
        assert "register() got capability 'quantum' for an attack (allowed: minimum_norm" in odd.error
    finally:
        plugins.reset()
        plugins.load_plugins()


def test_a_renamed_registration_answers_to_its_old_name_with_a_warning():
    import types
    import warnings

    import advkit.plugin

    module = types.ModuleType("advkit_renamer")

    def advkit_register_attacks(register):
        register("calm", lambda model, threat: (lambda x, y: x), renamed_from=("quiet-noise",))

    module.advkit_register_attacks = advkit.plugin.hookimpl(advkit_register_attacks)
    try:
        plugins.load_plugins()
        plugins.register_plugin(module, plugins.PluginInfo("renamer", "advkit_renamer", "advkit-renamer", "0.1"))
        reg = plugins.registry("attack")
        with pytest.warns(FutureWarning, match="attack 'quiet-noise' was renamed 'calm'"):
            assert reg.get("quiet-noise").name == "calm"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert reg.get("calm").name == "calm" and reg.get("quiet-noise").name == "calm"  # said once
        assert "quiet-noise" not in reg.all_names()  # never suggested
    finally:
        plugins.reset()
        plugins.load_plugins()


def test_qualified_names_do_not_repeat_the_provider():
    reg = plugins.registry("attack")
    assert reg.get("art.fgsm").qualified == "art.fgsm" and reg.get("pgd").qualified == "torchattacks.pgd"
    assert not [e.qualified for e in reg if e.qualified.startswith("art.art.")]
