"""Name -> factory tables for attacks, defenses, explainers, backbones and datasets.

Names are case-insensitive. Every entry is also reachable by its qualified
name ``provider.name``. When two plugins register the same bare name, the
first registration keeps it (advkit's own plugins load first, then the others
in a fixed order), the collision is reported once, and the other provider's
entry stays reachable as ``provider.name``; ``ADVKIT_PREFER=provider.name``
(comma-separated) hands the bare name over explicitly, and that is reported
too. Unknown names raise a :class:`UserError` listing the closest valid ones.

What a component *is* is declared when it registers (see :data:`CAPABILITIES`)
so that the engines ask the registry instead of knowing names. Any
registration may also name the library it wraps (``library="torchattacks"``,
or a tuple of alternative distributions, the first installed one counts): the
listing then shows that library's name and version.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from advkit._internal.errors import UserError, closest, unknown
from advkit._internal.values import Range, convert

KINDS = ("attack", "defense", "explainer", "backbone", "dataset", "check")

#: Capabilities a registration may declare, per kind, with their meaning.
CAPABILITIES: dict[str, dict[str, str]] = {
    "attack": {
        "minimum_norm": "returns the smallest perturbation it finds, of any size: points outside the budget "
                        "count as not broken (and are counted in the report) instead of stopping the run",
        "black_box": "uses model outputs only, no gradients",
        "adaptive": "name of the attack to run instead on a stochastic (randomized) model",
        "reference": "'white-box', 'black-box' or 'margin': the attack the audit and --adaptive use in that role",
        "iterations": "the name of the parameter that sets its number of iterations (the audit scales it)",
        "early_stop": "stops working on a point as soon as it is broken (per-point early stop)",
        "keeps_best": "returns a misclassified example for every point any of its iterates misclassified (its "
                      "best iterate, not its last); an attack with early_stop does so too",
        "default": "its position (1, 2, ...) in the default suite: what advkit eval runs when no attack is named",
        "validation": "true: the attack advkit train validates with when none is named",
    },
    "backbone": {
        "prefix": "a model-name prefix this factory resolves (a scheme such as hf-hub:); the rest of the "
                  "name is passed as the factory's ``name`` parameter",
        "claims": "a callable name -> bool: bare names this prefix resolver also accepts",
        "default": "'model': the checkpoint advkit eval and explain use when none is named; 'architecture': "
                   "what advkit train trains when none is named",
        "trained_on": "the dataset a pretrained checkpoint was trained on",
        "defenses": "the defenses a pretrained checkpoint was trained with (a tuple of names; () for none)",
        "trains_with": "the optimisation settings advkit train uses for it when none are given: a dict of "
                       "optimizer, lr, momentum, weight_decay, schedule, batch_size",
    },
    "defense": {},
    "explainer": {},
    "check": {},
    "dataset": {
        "default": "true: the dataset used when none is named",
        "usual_eps": "the Linf budget usually evaluated on this dataset (\"0.1\", \"8/255\"): the threat model of "
                     "an attack on a model trained on it when none is given",
        "reads_folders": "true: resolves a directory given as the dataset name (it arrives as the ``root`` parameter)",
    },
}

#: The word that asks for a kind's declared default (``--model default``, ``--attacks default``).
DEFAULT = "default"

# Positional arguments supplied by the engines, not by the user.
_ENGINE_ARGS = {"model", "threat", "split", "self", "data_dir"}

#: What the run's threat model fixes: never an attack's own parameter (the option that sets each).
THREAT_PARAMS = {"eps": "--eps", "norm": "--norm", "bounds": "the dataset's input bounds"}


def refuse_threat_params(kind: str, name: str, params) -> None:
    """An attack parameter that would redefine the run's threat model is refused, naming the run's option."""
    if kind != "attack":
        return
    for key in params:
        k = str(key).strip().replace("-", "_").lower()
        if k in THREAT_PARAMS:
            where = THREAT_PARAMS[k]
            api = f" ({k}= in the Python API)" if where.startswith("--") else ""
            raise UserError(f"attack {name!r}: {k} belongs to the run's threat model, not to an attack; "
                            f"set it with {where}{api}")


@dataclass
class Param:
    """One user-settable parameter of a factory."""

    name: str
    default: Any = inspect.Parameter.empty
    annotation: str = ""

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def as_dict(self) -> dict:
        d = {"name": self.name, "type": self.annotation}
        if not self.required:
            d["default"] = self.default if _jsonable(self.default) else repr(self.default)
        else:
            d["required"] = True
        return d


def _jsonable(v) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return v is None or isinstance(v, (bool, int, float, str, list, tuple))


def _annotation_name(a) -> str:
    if a is inspect.Parameter.empty:
        return ""
    return a if isinstance(a, str) else getattr(a, "__name__", str(a))


def introspect(factory: Callable) -> list[Param]:
    """The keyword parameters of ``factory`` that a user can set."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return []
    out = []
    for p in sig.parameters.values():
        if p.name in _ENGINE_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(Param(p.name, p.default, _annotation_name(p.annotation)))
    return out


@dataclass
class Entry:
    """A registered component."""

    kind: str
    name: str
    factory: Callable
    provider: str
    package: str = ""
    version: str = ""
    aliases: tuple[str, ...] = ()
    summary: str = ""
    params: list[Param] = field(default_factory=list)
    capabilities: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, "Range"] = field(default_factory=dict)
    library: tuple[str, ...] = ()
    renamed_from: tuple[str, ...] = ()  # former names: still found, with a warning naming the new one

    @property
    def qualified(self) -> str:
        """``provider.name``; a name that already starts with its provider (``art.fgsm``) is its own."""
        return self.name if self.name.startswith(f"{self.provider.lower()}.") else f"{self.provider}.{self.name}"

    def wrapped(self) -> dict | None:
        """The library this entry wraps (``register(..., library=...)``): the first of the declared
        distributions that is installed, with its version; ``None`` when nothing was declared."""
        if not self.library:
            return None
        import importlib.metadata as md

        for dist in self.library:
            try:
                return {"name": dist, "version": md.version(dist)}
            except md.PackageNotFoundError:
                continue
        return {"name": self.library[0], "version": "not installed"}

    def can(self, capability: str):
        """The declared value of ``capability`` (``None`` when not declared)."""
        return self.capabilities.get(capability)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "provider": self.provider,
            "package": self.package,
            "version": self.version,
            "aliases": list(self.aliases),
            "renamed_from": list(self.renamed_from),
            "summary": self.summary,
            "params": [p.as_dict() for p in self.params],
            "capabilities": {k: v for k, v in self.capabilities.items() if _jsonable(v)},
            "library": self.wrapped(),
        }

    def provenance(self) -> dict:
        """Who provided this entry: for reports."""
        return {"provider": self.provider, "package": self.package, "version": self.version, "qualified": self.qualified}


class Registry:
    """One table of components of one kind."""

    def __init__(self, kind: str, prefer: set[str] | None = None, warn: Callable[[str], None] | None = None):
        self.kind = kind
        self._entries: list[Entry] = []
        self._by_name: dict[str, Entry] = {}
        self._by_qualified: dict[str, Entry] = {}
        self._prefer = {p.lower() for p in (prefer or ())}
        self._warn = warn or (lambda message: None)
        self.notes: list[str] = []  # collisions and explicit preferences, as reported
        self._renamed: dict[str, Entry] = {}
        self._said: set[str] = set()

    def _note(self, message: str) -> None:
        self.notes.append(message)
        self._warn(message)

    def add(self, entry: Entry) -> None:
        """Add ``entry``; a bare name already taken stays with its first provider unless ``prefer`` says otherwise."""
        self._entries.append(entry)
        self._by_qualified.setdefault(entry.qualified.lower(), entry)
        preferred = entry.qualified.lower() in self._prefer
        for key in (entry.name, *entry.aliases):
            key = key.lower()
            holder = self._by_name.get(key)
            if holder is None or holder is entry:
                self._by_name[key] = entry
            elif holder.provider == entry.provider:
                continue  # a plugin's own alias clash: its first registration keeps the name
            elif preferred:
                self._by_name[key] = entry
                self._note(f"{self.kind} {key!r} is {entry.qualified!r} (ADVKIT_PREFER); "
                           f"{holder.qualified!r} stays reachable by that name")
            else:
                self._note(f"plugin {entry.provider!r} also registers {self.kind} {key!r}, which {holder.provider!r} "
                           f"provides: {key!r} stays {holder.qualified!r}; use {entry.qualified!r} "
                           f"(or ADVKIT_PREFER={entry.qualified})")

        for key in entry.renamed_from:
            if key not in self._by_name:
                self._by_name[key] = self._renamed[key] = entry

    def with_capability(self, capability: str, value=True) -> list[Entry]:
        """Entries that declared ``capability`` (with ``value``), in registration order."""
        return [e for e in self._entries if e.capabilities.get(capability) == value]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted({e.name for e in self._entries})

    def all_names(self) -> list[str]:
        """Names, aliases and qualified names: everything ``get`` accepts."""
        return sorted((set(self._by_name) - set(self._renamed)) | set(self._by_qualified))

    def find(self, name: str) -> Entry | None:
        key = name.strip().lower()
        entry = self._by_name.get(key) or self._by_qualified.get(key)
        if entry is not None and self._renamed.get(key) is entry and key not in self._said:
            import warnings

            self._said.add(key)
            warnings.warn(f"{self.kind} {key!r} was renamed {entry.name!r}; the old name will go in a later "
                          f"version", FutureWarning, stacklevel=3)
        return entry

    def get(self, name: str) -> Entry:
        entry = self.find(name)
        if entry is None:
            raise unknown(self.kind, name, self.all_names())
        return entry

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def default(self, role=True) -> Entry:
        """The entry that declared ``default=role`` (the first registered), or a :class:`UserError`."""
        found = self.with_capability("default", role)
        if not found:
            raise UserError(f"no plugin declares a default {self.kind}{'' if role is True else f' ({role})'}: "
                            f"name one (see 'advkit list {self.kind}s')")
        return found[0]

    def suite(self, capability: str = "default") -> list[str]:
        """The names whose ``capability`` is a position, in that order (the default attack suite)."""
        ranked = [e for e in self._entries if type(e.capabilities.get(capability)) is int]
        return [e.name for e in sorted(ranked, key=lambda e: e.capabilities[capability])]


def summary_of(factory: Callable) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def bind_params(entry: Entry, params: dict[str, Any]) -> dict[str, Any]:
    """Check user parameters against the factory's and convert strings to the default's type."""
    refuse_threat_params(entry.kind, entry.name, params)
    known = {p.name: p for p in entry.params}
    try:
        accepts_any = any(
            p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values()
        )
    except (TypeError, ValueError):
        accepts_any = True
    out = {}
    for key, value in params.items():
        k = key.replace("-", "_")
        if k not in known and not accepts_any:
            hits = closest(k, list(known))
            hint = f"; did you mean {hits[0]!r}?" if hits else ""
            listing = ", ".join(known) or "none"
            raise UserError(
                f"{entry.kind} {entry.name!r} has no parameter {k!r}{hint} (its parameters: {listing})"
            )
        out[k] = convert(value, known[k].default if k in known else None, f"{entry.name}.{k}")
        if k in entry.ranges:
            entry.ranges[k].check(out[k], f"{entry.kind} {entry.name!r}: {k}")
    return out


from advkit._internal.grammar import parse_options, parse_spec  # noqa: E402,F401  (the one grammar, re-exported)
