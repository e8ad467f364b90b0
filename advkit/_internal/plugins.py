"""The plugin manager: entry-point loading, isolation and the registries filled from hooks.

Plugins are found in the ``advkit`` entry-point group; advkit's own plugins are
found the same way. They load in a fixed order whatever the order on disk:
advkit's own distribution first, then the others by distribution and entry-point
name, so that a name two plugins register resolves the same way everywhere
(see :mod:`advkit._internal.registry`). ``ADVKIT_LOAD_PLUGINS`` (comma-separated
entry-point or module names) restricts which load; set but empty, none load.
``ADVKIT_PREFER`` (comma-separated ``provider.name``) hands a bare name to a
provider other than its first registrant. A plugin that raises on import or
inside any hook is reported by name on stderr and skipped: nothing it
registered (in any hook: the registries are filled together, and its commands
are removed) stays usable, and ``advkit list plugins`` marks it FAILED.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import traceback
from dataclasses import dataclass

import pluggy

from advkit import hookspecs
from advkit._internal.registry import CAPABILITIES, KINDS, THREAT_PARAMS, Entry, Range, Registry, introspect, summary_of

GROUP = "advkit"

pm = pluggy.PluginManager("advkit")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginInfo:
    """One plugin known to the manager, loaded or failed."""

    name: str
    module: str
    package: str
    version: str
    error: str = ""

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v or k != "error"}


_plugins: dict[str, PluginInfo] = {}
_module_info: dict[str, PluginInfo] = {}
_loaded = False
_registries: dict[str, Registry] = {}
_commands: dict[str, list] = {}  # plugin name -> (group, command name) it added
_debug = os.environ.get("ADVKIT_DEBUG", "") not in ("", "0")


def _warn(message: str) -> None:
    print(f"advkit: {message}", file=sys.stderr)
    if _debug:
        traceback.print_exc()


def _allowed() -> set[str] | None:
    raw = os.environ.get("ADVKIT_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def load_plugins() -> None:
    """Load every plugin of the entry-point group once (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    allowed = _allowed()
    for ep in sorted(md.entry_points(group=GROUP), key=_load_order):
        package, version = _dist(ep)
        if allowed is not None and ep.name not in allowed and ep.value not in allowed:
            continue
        if ep.name in _plugins:
            continue
        info = PluginInfo(ep.name, ep.value, package, version)
        _plugins[ep.name] = info
        try:
            module = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin (even one calling sys.exit) must not take advkit down
            info.error = f"{type(exc).__name__}: {exc}"
            _warn(f"plugin {ep.name!r} ({ep.value}) failed to load: {info.error}")
            continue
        register_plugin(module, info)


def _dist(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else ("", "")


def _load_order(ep) -> tuple:
    package = _dist(ep)[0]
    return (package.lower() != "advkit", package.lower(), ep.name)


def _prefer() -> set[str]:
    return {p.strip() for p in os.environ.get("ADVKIT_PREFER", "").split(",") if p.strip()}


def register_plugin(module, info: PluginInfo | None = None) -> None:
    """Register an already imported plugin module (used for entry points and by tests)."""
    name = getattr(module, "__name__", repr(module))
    info = info or PluginInfo(name, name, name.split(".")[0], "")
    _plugins.setdefault(info.name, info)
    if pm.is_registered(module):
        return
    pm.register(module, name=info.name)
    _module_info[info.name] = info
    _registries.clear()  # rebuilt with the new plugin on next use


def plugins() -> list[PluginInfo]:
    """Every plugin found, with load errors."""
    load_plugins()
    return list(_plugins.values())


def _entry(kind: str, info: PluginInfo, name, factory, aliases=(), summary=None, ranges=None, library=None,
           **capabilities) -> Entry:
    _check_names(kind, name, factory, aliases)
    unknown_caps = sorted(set(capabilities) - set(CAPABILITIES[kind]))
    if unknown_caps:
        allowed = ", ".join(CAPABILITIES[kind]) or "none"
        raise TypeError(f"register() got capability {unknown_caps[0]!r} for {'an' if kind[0] in 'aeiou' else 'a'} {kind} (allowed: {allowed})")
    params = introspect(factory)
    threat = sorted({p.name for p in params} & set(THREAT_PARAMS)) if kind == "attack" else []
    if threat:
        raise TypeError(f"register({name!r}): an attack factory may not take {threat[0]!r}: the run's threat "
                        f"model arrives as the factory's ``threat`` argument")
    ranges = dict(ranges or {})
    for key, r in ranges.items():
        if not isinstance(r, Range) or key not in {p.name for p in params}:
            raise TypeError(f"register({name!r}): ranges[{key!r}] must be a Range for one of the factory's parameters")
    libraries = () if library is None else (library,) if isinstance(library, str) else library
    if not isinstance(libraries, (tuple, list)) or not all(isinstance(d, str) and d for d in libraries):
        raise TypeError(f"register({name!r}): library must be a distribution name or a tuple of them")
    return Entry(
        kind=kind, name=str(name).lower(), factory=factory, provider=info.name, package=info.package,
        version=info.version, aliases=tuple(a.lower() for a in aliases), summary=summary or summary_of(factory),
        params=params, capabilities={k: v for k, v in capabilities.items() if v not in (None, False)}, ranges=ranges,
        library=tuple(libraries),
    )


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.+/")


def _check_names(kind: str, name, factory, aliases, what: str = "aliases") -> None:
    """A registration's name and aliases are non-empty words of the name grammar; its factory is callable."""
    if isinstance(aliases, str) or not isinstance(aliases, (tuple, list)):
        raise TypeError(f"register({name!r}): {what} must be a tuple of names, not {type(aliases).__name__}")
    for n in (name, *aliases):
        if not isinstance(n, str) or not n.strip() or not set(n.lower()) <= _NAME_CHARS:
            raise TypeError(f"register(): {kind} name {n!r} must be a non-empty word of letters, digits and -_.+/")
    if not callable(factory):
        raise TypeError(f"register({name!r}): the factory must be callable, got {type(factory).__name__}")


def _collect(kind: str) -> Registry | None:
    """The registry of ``kind``, or None when a plugin failed in this hook (it is then marked and skipped)."""
    reg = Registry(kind, prefer=_prefer(), warn=_warn_once)
    hook = getattr(pm.hook, f"advkit_register_{kind}s")
    for impl in hook.get_hookimpls():  # registration order (pluggy lists them first registered first)
        info = _module_info.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, impl.plugin_name, "", ""))
        if info.error:
            continue
        pending: list[Entry] = []

        def register(name, factory, *, aliases=(), summary=None, ranges=None, library=None, renamed_from=(),
                     _info=info, **capabilities):
            entry = _entry(kind, _info, name, factory, aliases, summary, ranges, library, **capabilities)
            _check_names(kind, name, factory, renamed_from, "renamed_from")
            entry.renamed_from = tuple(str(n).lower() for n in renamed_from)
            pending.append(entry)

        try:
            impl.function(register=register)
        except (Exception, SystemExit) as exc:  # the whole plugin is skipped, not only this hook
            _fail(info, f"advkit_register_{kind}s", exc)
            return None
        for entry in pending:
            reg.add(entry)
    return reg


def _fail(info: PluginInfo, hook: str, exc: Exception) -> None:
    """Mark ``info`` FAILED, drop every registry (they are rebuilt without it) and the commands it added."""
    info.error = f"{type(exc).__name__} in {hook}: {exc}"
    _warn(f"plugin {info.name!r} failed in {hook} and is skipped: {type(exc).__name__}: {exc}")
    _registries.clear()
    for cli, name in _commands.pop(info.name, []):
        cli.commands.pop(name, None)


def _build_all() -> None:
    """Fill every registry at once, so that a plugin failing in any hook is skipped in all of them."""
    load_plugins()
    while len(_registries) < len(KINDS):
        for kind in KINDS:
            reg = _collect(kind)
            if reg is None:  # a plugin failed: start again without it
                break
            _registries[kind] = reg


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"advkit: warning: {message}", file=sys.stderr)


def get_registry(kind: str) -> Registry:
    """The registry of one kind: ``attack``, ``defense``, ``explainer``, ``backbone`` or ``dataset``."""
    kind = kind.rstrip("s") if kind.endswith("s") and kind.rstrip("s") in KINDS else kind
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    if kind not in _registries:
        _build_all()
    return _registries[kind]


registry = get_registry  # the name the core uses


def register_commands(cli) -> None:
    """Let plugins add click commands (a plugin that raises keeps none of its commands)."""
    load_plugins()
    for impl in pm.hook.advkit_register_commands.get_hookimpls():
        info = _module_info.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, impl.plugin_name, "", ""))
        if info.error:
            continue
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except (Exception, SystemExit) as exc:
            cli.commands.clear()
            cli.commands.update(before)
            _fail(info, "advkit_register_commands", exc)
            continue
        added = [n for n in cli.commands if n not in before]
        for n in added:
            _guard(cli.commands[n], info)
        _commands[info.name] = [(cli, n) for n in added]


def _guard(command, info: PluginInfo) -> None:
    """Make ``command`` refuse to run when its plugin failed in a registry hook (found when they are filled)."""
    import functools

    from advkit._internal.errors import UserError

    inner = command.callback
    if inner is None:
        return

    @functools.wraps(inner)
    def callback(*args, **kwargs):
        _build_all()
        if info.error:
            raise UserError(f"command {command.name!r} comes from plugin {info.name!r}, which failed: {info.error}")
        return inner(*args, **kwargs)

    command.callback = callback


def reset() -> None:
    """Forget every plugin (tests use this after changing ``ADVKIT_LOAD_PLUGINS``)."""
    global _loaded
    for name, _ in list(pm.list_name_plugin()):  # plugins need not be hashable
        pm.unregister(name=name)
    _plugins.clear()
    _module_info.clear()
    _registries.clear()
    _commands.clear()
    _warned.clear()
    _loaded = False


def import_object(spec: str):
    """Import ``package.module:attr`` (used for user models and factories)."""
    from advkit._internal.errors import UserError

    module_name, _, attr = spec.partition(":")
    top = module_name.split(".")[0]
    here = os.getcwd()
    if here not in sys.path and (os.path.isfile(f"{top}.py") or os.path.isfile(os.path.join(top, "__init__.py"))):
        sys.path.append(here)  # the user's own module in the working directory, as ``python -m`` finds it
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        hint = (f" (put {top}.py in the working directory or its folder on PYTHONPATH)"
                if isinstance(exc, ModuleNotFoundError) and exc.name == top else "")
        raise UserError(f"cannot import module {module_name!r} from {spec!r}: {exc}{hint}") from None
    except Exception as exc:
        raise UserError(f"importing {module_name!r} from {spec!r} failed: {type(exc).__name__}: {exc}") from None
    for part in attr.split(".") if attr else ():
        if not hasattr(obj, part):
            raise UserError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
