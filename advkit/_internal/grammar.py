"""The one grammar of advkit's names: ``NAME[:key=value,...]``, lists of them, and ``NAME.key=value`` options.

Every kind (attacks, defenses, explainers, backbones, datasets), the command line and
the Python API parse names here:

- a *spec* is a name and its parameters, ``pgd:steps=20,alpha=0.01``. The name may
  itself hold colons (a prefix such as ``hf-hub:ORG/NAME`` or ``robustbench:NAME``,
  an import path ``package.module:factory``): it ends before the first colon whose
  text goes on to a ``key=value``. A number without ``=`` continues the value before it
  (``smallcnn:mean=0.1,0.2,0.3``);
- a *list* is specs separated by commas, ``pgd:steps=20,alpha=0.01,aa,cw:c=1``: a part
  with ``=`` belongs to the spec before it, any other part starts a new one;
- an *option* addresses one parameter from outside the spec, ``pgd.steps=20``.

Values stay strings; the registry converts them to each parameter's type.
"""

from __future__ import annotations

from advkit._internal.errors import UserError


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """``"mixed:clean=0.5,fgsm=0.25"`` -> ``("mixed", {"clean": "0.5", "fgsm": "0.25"})``."""
    text = str(text).strip()
    parts = text.split(":")
    for k in range(1, len(parts)):
        if "=" in parts[k].split(",")[0]:
            return ":".join(parts[:k]).strip(), _params(":".join(parts[k:]), text)
    if "=" in text:
        raise UserError(f"{text!r}: write NAME:key=value (parameters follow the name after a colon)")
    return text, {}


def _params(text: str, whole: str) -> dict[str, str]:
    params: dict[str, str] = {}
    last = None
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if eq and key.strip():
            last = key.strip()
            if last in params:
                raise UserError(f"{whole!r}: parameter {last!r} is given twice")
            params[last] = value.strip()
        elif not eq and last is not None and _number(part):
            params[last] += f",{part}"  # a list of numbers: mean=0.1,0.2,0.3
        else:
            raise UserError(f"{whole!r}: parameters must look like key=value, got {part!r}")
    return params


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_list(text) -> list[tuple[str, dict[str, str]]]:
    """``"pgd:steps=20,alpha=0.01,aa"`` -> ``[("pgd", {"steps": "20", "alpha": "0.01"}), ("aa", {})]``.

    A list or tuple is taken item by item (each item a spec); a string is one list, never characters."""
    if isinstance(text, (list, tuple)):
        out = []
        for item in text:
            if not isinstance(item, str):
                raise UserError(f"expected names, got {type(item).__name__} {item!r}")
            out += parse_list(item)
        return out
    if not isinstance(text, str):
        raise UserError(f"expected a name or a list of names, got {type(text).__name__}")
    items: list[tuple[str, dict[str, str]]] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        key, eq, _ = token.partition("=")
        if eq and ":" not in key:
            if not items:
                raise UserError(f"{text!r}: {token!r} belongs to no name (write NAME:{token})")
            params, new = items[-1][1], _params(token, text)
            if set(new) & set(params):
                raise UserError(f"{text!r}: parameter {key.strip()!r} is given twice")
            params.update(new)
            continue
        name, params = parse_spec(token)
        if not name:
            raise UserError(f"{text!r}: {token!r} names nothing")
        items.append((name, params))
    return items


def parse_options(items) -> dict[str, dict[str, str]]:
    """``["pgd.steps=20", "cw.c=1"]`` -> ``{"pgd": {"steps": "20"}, "cw": {"c": "1"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        prefix, dot, param = key.rpartition(".")
        if not sep or not dot or not param.strip() or not prefix.strip():
            raise UserError(f"option {item!r} must look like NAME.PARAM=VALUE (e.g. pgd.steps=20)")
        out.setdefault(prefix.strip().lower(), {})[param.strip()] = value
    return out


def parse_assignments(items, what: str = "--opt") -> dict[str, str]:
    """``["steps=5", "baseline=zero"]`` -> ``{"steps": "5", "baseline": "zero"}``."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} {item!r} must look like PARAM=VALUE")
        if key.strip() in out and out[key.strip()] != value:
            raise UserError(f"{what}: {key.strip()} is given twice with different values ({out[key.strip()]} "
                            f"and {value})")
        out[key.strip()] = value
    return out


def merged(*sources: dict[str, dict], where: str = "") -> dict[str, dict]:
    """Parameters per name from several places; the same parameter with two different values is refused."""
    out: dict[str, dict] = {}
    for source in sources:
        for name, params in (source or {}).items():
            if not isinstance(params, dict):
                raise UserError(f"{where or 'parameters'} of {name!r} must be a mapping of parameter names to "
                                f"values, got {type(params).__name__}")
            mine = out.setdefault(str(name).lower(), {})
            for key, value in params.items():
                if key in mine and str(mine[key]) != str(value):
                    raise UserError(f"{name}.{key} is given twice with different values ({mine[key]} and {value})")
                mine[key] = value
    return out
