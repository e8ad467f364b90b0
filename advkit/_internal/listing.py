"""What is registered: the data behind ``advkit list`` and ``advkit.list_components``."""

from __future__ import annotations

from fnmatch import fnmatchcase

from advkit._internal.plugins import plugins, registry
from advkit._internal.registry import KINDS


def _matches(pattern: str | None, *names: str) -> bool:
    """Whether any of ``names`` matches the shell-style ``pattern`` (case-insensitive; None matches all)."""
    if pattern is None:
        return True
    p = pattern.lower()
    return any(fnmatchcase(n.lower(), p) for n in names if n)


def list_components(kind: str | None = None, pattern: str | None = None) -> dict[str, list[dict]]:
    """Registered components by kind (``attacks``, ``defenses``, ...) and the plugins, as dicts.

    ``pattern`` keeps the entries whose name, an alias or qualified name matches
    it with shell wildcards (``"*resnet*"``, ``"ta.*"``); plugins match by name,
    module or distribution.
    """
    kinds = [k.rstrip("s") for k in ([kind] if kind else [*KINDS, "plugin"])]
    registry(KINDS[0])  # fills every registry: a plugin failing in any hook is then marked FAILED
    out: dict[str, list[dict]] = {}
    for k in kinds:
        if k == "plugin":
            out["plugins"] = [p.as_dict() for p in plugins() if _matches(pattern, p.name, p.module, p.package)]
        else:
            out[f"{k}s"] = [e.as_dict() for e in registry(k) if _matches(pattern, e.name, e.qualified, *e.aliases)]
    return out


def format_params(params: list[dict]) -> str:
    parts = []
    for p in params:
        if p.get("required"):
            parts.append(f"{p['name']}=<required>")
        else:
            d = p.get("default")
            parts.append(f"{p['name']}={d!r}" if isinstance(d, str) else f"{p['name']}={d}")
    return ", ".join(parts)


def source_of(entry: dict) -> str:
    """``[library version; plugin P]`` for a wrapped library, else ``[P: distribution version]``."""
    lib = entry.get("library")
    if lib:
        return f"[{lib['name']} {lib['version']}; plugin {entry['provider']}]"
    return f"[{entry['provider']}: {entry['package']} {entry['version']}]".replace(" ]", "]")


def format_listing(listing: dict[str, list[dict]]) -> str:
    """Human-readable text for ``advkit list``."""
    lines = []
    for kind, items in listing.items():
        lines.append(f"{kind} ({len(items)})")
        if kind == "plugins":
            for p in items:
                status = f"  FAILED: {p['error']}" if p.get("error") else ""
                lines.append(f"  {p['name']:<22} {p['module']:<28} {p.get('package', '')} {p.get('version', '')}{status}")
            continue
        for e in items:
            alias = f" (aka {', '.join(e['aliases'])})" if e["aliases"] else ""
            lines.append(f"  {e['name']}{alias}  {source_of(e)}{_roles(e.get('capabilities') or {})}")
            if e["summary"]:
                lines.append(f"      {e['summary']}")
            if e["params"]:
                lines.append(f"      params: {format_params(e['params'])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _roles(caps: dict) -> str:
    """What an entry is used for when the user names nothing: ``  [default suite #1, validation]``."""
    roles = []
    default = caps.get("default")
    if type(default) is int:
        roles.append(f"default suite #{default}")
    elif default is True:
        roles.append("default")
    elif isinstance(default, str):
        roles.append(f"default {default}")
    if caps.get("validation"):
        roles.append("validation")
    if isinstance(caps.get("trains_with"), dict):
        roles.append("trains with " + ", ".join(f"{k} {v}" for k, v in caps["trains_with"].items()))
    return f"  [{'; '.join(roles)}]" if roles else ""
