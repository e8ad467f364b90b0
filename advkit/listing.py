"""What is registered: the data behind ``advkit list`` and ``advkit.list_components``."""

from __future__ import annotations

from advkit.plugins import plugins, registry
from advkit.registry import KINDS


def list_components(kind: str | None = None) -> dict[str, list[dict]]:
    """Registered components by kind (``attacks``, ``defenses``, ...) and the plugins, as dicts."""
    kinds = [k.rstrip("s") for k in ([kind] if kind else [*KINDS, "plugin"])]
    out: dict[str, list[dict]] = {}
    for k in kinds:
        if k == "plugin":
            out["plugins"] = [p.as_dict() for p in plugins()]
        else:
            out[f"{k}s"] = [e.as_dict() for e in registry(k)]
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
            lines.append(f"  {e['name']}{alias}  [{e['provider']}: {e['package']} {e['version']}]".rstrip())
            if e["summary"]:
                lines.append(f"      {e['summary']}")
            if e["params"]:
                lines.append(f"      params: {format_params(e['params'])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
