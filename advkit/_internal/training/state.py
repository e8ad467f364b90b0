"""The training state on disk: one atomic file per committed epoch, resume checks, and the output folder.

An epoch's end writes, in this order, ``last`` and ``best`` (checkpoints),
``metrics.jsonl``/``metrics.csv``/``curves.png`` (records) and last
``train_state.safetensors``: weights, optimizer, RNG and defense tensors with
everything else (epoch, settings, history, best) in the file's own metadata.
That one atomic rename commits the epoch; ``train_state.json`` is a readable
copy written after it and never read back. A kill before the commit leaves
the previous epoch's state, so ``resume`` redoes the epoch and rewrites the
files ahead of it with identical content; nothing can train an epoch twice
or mix two epochs.

``resume`` refuses a state whose settings (seed, lr, batch size, training-set
size, schedule, optimizer, epochs, defenses, threat model, ...) differ from
the run's; a new ``out`` that already holds a run is refused unless the run
resumes it or asks to overwrite it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

from advkit._internal import checkpoint as ckpt
from advkit._internal import files
from advkit._internal.defense import Defense
from advkit._internal.errors import UserError

STATE_FORMAT = "advkit-train-state/2"
STATE = "train_state"
RUN_FILES = ("train_state.safetensors", "train_state.json", "last.safetensors", "last.json", "best.safetensors",
             "best.json", "metrics.jsonl", "metrics.csv", "curves.png", "config.json")
RUN_DIRS = ("tensorboard",)


def _describe(out: Path) -> str:
    with contextlib.suppress(Exception):
        meta = json.loads((out / f"{STATE}.json").read_text())
        done, total = int(meta["epoch"]), int(meta["settings"]["epochs"])
        return f"finished, {done} epochs" if done >= total else f"stopped after epoch {done} of {total}"
    return "files " + ", ".join(f for f in RUN_FILES if (out / f).exists())


def prepare_out(out: Path, *, resume: bool, overwrite: bool, main: bool = True) -> bool:
    """Check ``out`` for a new run (refuse a folder holding a run unless ``overwrite``) or for ``resume``.

    Returns whether there is a committed epoch to resume from. ``resume`` of a run stopped before its
    first epoch was committed starts it again from the beginning, and says so."""
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    state = out / f"{STATE}.safetensors"
    held = [f for f in RUN_FILES if (out / f).exists()]
    if resume and state.is_file():
        return True
    if resume and not main:
        return False  # rank 0 decides (and clears an uncommitted run)
    if resume and not held:
        raise UserError(f"nothing to resume in {out}: {state.name} not found (run without --resume)")
    if resume:
        print(f"advkit: {out} holds no finished epoch (the run stopped before its first one ended): "
              "starting it from the beginning", file=sys.stderr, flush=True)
        overwrite = True
    if held and not overwrite:
        raise UserError(f"{out} already holds a training run ({_describe(out)}); "
                        "pass --resume to continue it or --overwrite to replace it")
    try:
        for f in held:
            (out / f).unlink()
        for d in RUN_DIRS:
            if (out / d).is_dir():
                shutil.rmtree(out / d)
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise UserError(f"cannot write the run into {out}: {exc.strerror or exc}") from None
    return False


def save_state(out: Path, model: nn.Module, optimizer, defenses: list[Defense], meta: dict) -> None:
    """Commit an epoch: one atomic safetensors file holding all tensors and, in its metadata, ``meta``."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    scalars: dict = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    defense_meta = []
    for i, d in enumerate(defenses):
        extra = {}
        for k, v in (d.state_dict() or {}).items():
            if torch.is_tensor(v):
                tensors[f"defense.{i}.{k}"] = v
            else:
                extra[k] = v
        defense_meta.append(extra)
    meta = {**meta, "format": STATE_FORMAT, "optimizer": {"param_groups": sd["param_groups"], "scalars": scalars},
            "defense_state": defense_meta}
    text = json.dumps(meta, default=str)
    ckpt.save_tensors(out / f"{STATE}.safetensors", tensors, {"format": STATE_FORMAT, "meta": text})
    files.atomic_write_json(out / f"{STATE}.json", json.loads(text))


def read_state(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The committed state's tensors and metadata (a foreign or damaged file is one UserError)."""
    from safetensors import safe_open

    path = out / f"{STATE}.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise UserError(f"{path} is not a valid safetensors file ({type(exc).__name__}: {exc})") from None
    if header.get("format") != STATE_FORMAT or "meta" not in header:
        raise UserError(f"{path} is not an {STATE_FORMAT} training state (written by another advkit version?); "
                        "pass --overwrite to start over")
    from advkit._internal.schema import checked_state

    try:
        meta = json.loads(header["meta"])
    except (ValueError, RecursionError):
        raise UserError(f"{path}: its metadata is not readable JSON; pass --overwrite to start over") from None
    return tensors, checked_state(meta, str(path))


def check_settings(out: Path, saved: dict, settings: dict) -> None:
    """Refuse to resume a run whose settings differ (the epoch count may grow under a constant schedule)."""
    now = json.loads(json.dumps(settings, default=str))
    diff = [k for k in now if saved.get(k) != now[k]]
    if "epochs" in diff and now.get("schedule") == "constant" == saved.get("schedule") \
            and int(now["epochs"]) >= int(saved["epochs"]):
        diff.remove("epochs")
    if diff:
        raise UserError(f"{out} holds a run with other settings ({', '.join(diff)}); "
                        "resume with the same settings or pass --overwrite to start over")


def load_state(out: Path, model: nn.Module, optimizer, defenses: list[Defense], settings: dict, *,
               main: bool = True) -> dict:
    """Restore a committed state after checking its settings; ``main`` rewrites its readable copy; return its metadata."""
    tensors, meta = read_state(out)
    check_settings(out, meta.get("settings", {}), settings)
    ckpt.apply_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(out / STATE))
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, d in meta["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(d)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(cuda)
    extras = list(meta.get("defense_state") or [])
    for i, d in enumerate(defenses):
        prefix = f"defense.{i}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        own.update(extras[i] if i < len(extras) else {})
        if own:
            d.load_state_dict(own)
    if main:
        files.atomic_write_json(out / f"{STATE}.json", meta)
    return meta
