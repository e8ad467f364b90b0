"""The files advkit reads back, checked field by field before anything is built from them.

A checkpoint's JSON sidecar and a training state's metadata come from disk and may
be damaged or tampered with: every field a reader uses is checked here for its type
and its range (a class count of 1e12 would otherwise become an allocation of
terabytes), and a violation is one :class:`UserError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from advkit._internal.errors import UserError

MAX_JSON_BYTES = 16 * 2**20
MAX_CLASSES = 100_000
MAX_SIDE = 8192
MAX_CHANNELS = 64


class Fields:
    """Checks of one mapping read from ``source`` (a file name, for the messages)."""

    def __init__(self, data, source: str):
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(data).__name__}")
        self.data, self.source = data, source

    def fail(self, key: str, what: str, value) -> UserError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return UserError(f"{self.source}: field {key!r} must be {what}, got {shown} (damaged or edited by hand?)")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def whole(self, key: str, lo: int, hi: int | None = None, value=None) -> int:
        v = self.data.get(key) if value is None else value
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise self.fail(key, f"a whole number in [{lo}, {hi if hi is not None else 'inf'}]", v)
        return v

    def number(self, key: str, value=None, positive: bool = False) -> float:
        v = self.data.get(key) if value is None else value
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        if not ok:
            raise self.fail(key, "a positive finite number" if positive else "a finite number", v)
        return float(v)

    def text(self, key: str) -> str:
        v = self.data.get(key)
        if not isinstance(v, str) or not v.strip() or len(v) > 1000:
            raise self.fail(key, "a non-empty string", v)
        return v

    def flag(self, key: str) -> bool:
        v = self.data.get(key)
        if not isinstance(v, bool):
            raise self.fail(key, "true or false", v)
        return v

    def mapping(self, key: str) -> dict:
        v = self.data.get(key)
        if not isinstance(v, dict):
            raise self.fail(key, "an object", v)
        return v

    def items(self, key: str, of: type | tuple) -> list:
        v = self.data.get(key)
        if not isinstance(v, list) or not all(isinstance(i, of) and not isinstance(i, bool) for i in v):
            names = " or ".join(t.__name__ for t in (of if isinstance(of, tuple) else (of,)))
            raise self.fail(key, f"a list of {names}s", v)
        return v


def read_json(path: str | Path, what: str):
    """A JSON file of at most 16 MiB, parsed; too large, too deep or invalid is one UserError."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_JSON_BYTES:
            raise UserError(f"{p}: {size / 2**20:.0f} MiB is too large for {what}")
        return json.loads(p.read_text())
    except UserError:
        raise
    except RecursionError:
        raise UserError(f"{p}: nested too deeply to be {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{p} is not readable as {what}: {exc}") from None


def checked_sidecar(meta, source: str) -> dict:
    """The fields of a checkpoint sidecar that rebuild a model, checked (unknown fields pass untouched)."""
    f = Fields(meta, source)
    f.text("arch")
    f.whole("num_classes", 1, MAX_CLASSES)
    shape = f.items("input_shape", int)
    if not 1 <= len(shape) <= 3:
        raise f.fail("input_shape", "1 to 3 sizes (C, H, W)", shape)
    f.whole("input_shape", 1, MAX_CHANNELS, value=shape[0])
    for side in shape[1:]:
        f.whole("input_shape", 1, MAX_SIDE, value=side)
    for key in ("mean", "std"):
        values = f.items(key, (int, float))
        if len(values) not in (1, shape[0]):
            raise f.fail(key, f"1 or {shape[0]} numbers (one per channel)", values)
        for v in values:
            f.number(key, value=v, positive=key == "std")
    if f.has("arch_params"):
        for k, v in f.mapping("arch_params").items():
            if not isinstance(v, (str, int, float, bool, list)) or (isinstance(v, float) and not math.isfinite(v)):
                raise f.fail(f"arch_params.{k}", "a number, string, flag or list", v)
    if f.has("defenses"):
        for recipe in f.items("defenses", dict):
            r = Fields(recipe, f"{source} (defenses)")
            r.text("name")
            if r.has("params"):
                r.mapping("params")
    for key in ("stochastic",):
        if f.has(key):
            f.flag(key)
    if f.has("epoch"):
        f.whole("epoch", 0)
    return meta


def checked_state(meta, source: str) -> dict:
    """A training state's metadata, checked: the epoch lies within the run, the history has one record per
    finished epoch, the optimizer state is shaped as torch saves it."""
    f = Fields(meta, source)
    settings = Fields(f.mapping("settings"), f"{source} (settings)")
    epochs = settings.whole("epochs", 1, 10**7)
    epoch = f.whole("epoch", 0, epochs if settings.data.get("schedule") != "constant" else None)
    history = f.items("history", dict)
    if len(history) != epoch:
        raise f.fail("history", f"one record per finished epoch ({epoch})", f"{len(history)} records")
    best = Fields(f.mapping("best"), f"{source} (best)")
    if best.has("epoch"):
        best.whole("epoch", 1, epoch)
        best.number("metric")
    optimizer = Fields(f.mapping("optimizer"), f"{source} (optimizer)")
    optimizer.items("param_groups", dict)
    optimizer.mapping("scalars")
    return meta
