"""The class-wise bank of negative frequency components (NFC), built once and cached on disk.

For ``per_class`` images ``X`` of each class (drawn with ``seed``) the bank
keeps ``p_X = 1[phi < 0] * F(X)``: the DFT of ``X`` (per channel, the unshifted
layout of ``torch.fft.fft2``) on the frequencies whose player has a negative
Shapley value under a pretrained model. The DC cell is never a player, so it
is never in ``p_X`` (the reference removes the centre too).

The values come from the gradient estimator of :mod:`advkit_csa.linearized`
(default: the bank needs signs, which it gets at a fraction of the cost) or the
permutation estimator of :mod:`advkit_csa.shapley`.

Files (through :mod:`advkit.checkpoint`): ``nfc-bank-<key>.safetensors`` with
``real``, ``imag`` (M, C, H, W), ``labels``, ``indices`` (dataset indices),
``values``/``stderr`` (M, P), ``passes`` (M,); and ``nfc-bank-<key>.json`` with
the settings. ``key`` hashes the model fingerprint (sha256 of its state-dict
tensors), the dataset name, split and chosen indices, and the estimator
settings: the same request finds the same file and computes nothing. While
building, every finished chunk of images is written to its own partial file
(:mod:`advkit_csa.shards`); re-running continues from there, under ``torchrun``
the ranks share the chunks, and as every image's random draws come from its own
seed, a resumed or sharded bank equals an uninterrupted single-process one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from advkit.plugin import UserError, model_fingerprint

FORMAT = "advkit-csa-bank/1"


def dataset_labels(data) -> torch.Tensor:
    """Labels of an :class:`advkit.data.ImageData` without decoding its images when possible."""
    base = getattr(data, "base", None)
    labels = getattr(base, "labels", None)
    if labels is None and hasattr(base, "targets"):
        labels = torch.as_tensor(base.targets)
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        idx = getattr(data, "indices", None)
        return labels[torch.as_tensor(idx, dtype=torch.long)] if idx is not None else labels
    return torch.tensor([int(data[i][1]) for i in range(len(data))])


def choose_images(labels: torch.Tensor, num_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Positions of ``per_class`` images of each class (all of a smaller class), drawn with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in range(num_classes):
        pos = (labels == c).nonzero().flatten()
        if len(pos) == 0:
            raise UserError(f"csa bank: the dataset has no image of class {c}")
        chosen.append(pos[torch.randperm(len(pos), generator=g)[:per_class]].sort().values)
    return torch.cat(chosen)


@dataclass
class NFCBank:
    """NFC spectra by class; ``spatial`` holds ``real(IFFT(p))``, what CSA adds to an image."""

    real: torch.Tensor
    imag: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    stderr: torch.Tensor
    meta: dict
    passes: torch.Tensor | None = None

    @property
    def spectra(self) -> torch.Tensor:
        return torch.complex(self.real, self.imag)

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", int(self.labels.max()) + 1))

    def for_class(self, c: int) -> torch.Tensor:
        """(n_c, C, H, W) complex NFC spectra of class ``c``."""
        return self.spectra[self.labels == int(c)]

    def spatial(self) -> torch.Tensor:
        """(M, C, H, W) ``real(IFFT(p))`` of every entry."""
        return torch.fft.ifft2(self.spectra).real

    def save(self, path: Path) -> None:
        """Write ``path`` (.safetensors) and its .json sidecar."""
        from advkit.plugin import atomic_write_json, save_tensors

        tensors = {"real": self.real, "imag": self.imag, "labels": self.labels, "indices": self.indices,
                   "values": self.values, "stderr": self.stderr}
        if self.passes is not None:
            tensors["passes"] = self.passes
        save_tensors(path, tensors, {"format": FORMAT})
        atomic_write_json(path.with_suffix(".json"), self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "NFCBank":
        """Load a bank from its ``.safetensors``/``.json`` pair, or a directory holding exactly one."""
        from advkit.plugin import load_tensors

        path = Path(path)
        if not path.exists():
            raise UserError(f"no NFC bank at {path} (build one with 'advkit csa-bank')")
        if path.is_dir():
            found = sorted(p for p in path.glob("nfc-bank-*.safetensors") if ".partial" not in p.name)
            if len(found) != 1:
                what = "no bank" if not found else f"{len(found)} banks ({', '.join(p.name for p in found)})"
                raise UserError(f"{path} holds {what}; pass the file (nfc-bank-<key>.safetensors)")
            path = found[0]
        side = path.with_suffix(".json")
        if not side.is_file():
            raise UserError(f"NFC bank {path} has no {side.name}")
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = {}
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserError(f"{path} is not an NFC bank ({FORMAT})")
        t = load_tensors(path.with_suffix(".safetensors"))
        return cls(t["real"], t["imag"], t["labels"].long(), t["indices"].long(), t["values"], t["stderr"], meta,
                   t.get("passes"))


def nfc_spectra(x: torch.Tensor, values: torch.Tensor, players) -> torch.Tensor:
    """``1[phi < 0]`` upsampled to the spectrum, times ``F(x)``: (N, C, H, W) complex."""
    members = values < 0
    mask = players.coalition_mask(members.to(x.device))  # centre cell included: remove it
    centre = players.masks[-1].to(x.device)
    mask = mask * (~centre).float()
    return torch.fft.fft2(x.float()) * mask[:, None]


def bank_key(fingerprint: str, dataset: str, split: str, indices: torch.Tensor, settings: dict) -> str:
    blob = json.dumps({"model": fingerprint, "dataset": dataset, "split": split,
                       "indices": hashlib.sha256(indices.long().numpy().tobytes()).hexdigest(),
                       "settings": settings, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


ESTIMATORS = ("gradient", "permutation")
DEFAULT_PAIRS = 512  # the most coalition pairs per image (gradient estimator)
DEFAULT_TARGET_LOSS = 0.003  # stop an image once its expected weighted disagreement is at most this (docs/csa.md)


def estimator_settings(estimator: str, *, players, pairs, target_loss, permutations, target_se, value, per_class,
                       seed) -> dict:
    """The settings that define a bank's values (part of its key)."""
    if estimator not in ESTIMATORS:
        raise UserError(f"csa bank: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "gradient" and int(pairs) < 2:
        raise UserError(f"csa bank: pairs must be >= 2, got {pairs!r}")
    if estimator == "permutation" and int(permutations) < 1:
        raise UserError(f"csa bank: permutations must be >= 1, got {permutations!r}")
    common = {"grid": list(players.grid), "value": value, "per_class": int(per_class), "seed": int(seed)}
    if estimator == "gradient":
        from advkit_csa.linearized import EXACT_SHARE, ROUND_PAIRS

        return {"estimator": "gradient", **common, "pairs": int(pairs),
                "target_loss": None if target_loss is None else float(target_loss), "round_pairs": ROUND_PAIRS,
                "exact_share": EXACT_SHARE}
    # the permutation estimator's settings are spelled as before, so that its cached banks keep their keys
    return {**common, "permutations": int(permutations), "target_se": target_se, "antithetic": True,
            "control_variate": True}


def default_batch_size(device) -> int:
    """Coalition images per model call: small on a CPU (cache-friendly), large on a GPU (to keep it busy)."""
    return 1024 if torch.device(device).type == "cuda" else 128


def _estimate(model, xs, ys, settings: dict, players, batch_size: int, indices: list[int]):
    if settings.get("estimator") == "gradient":
        from advkit_csa.linearized import gradient_shapley

        return gradient_shapley(model, xs, ys, grid=players.grid, pairs=settings["pairs"], target_loss=settings["target_loss"],
                                exact_share=settings["exact_share"], round_pairs=settings["round_pairs"], value=settings["value"],
                                batch_size=batch_size, seed=settings["seed"], indices=indices, progress=False)
    from advkit_csa.shapley import frequency_shapley

    return frequency_shapley(model, xs, ys, grid=players.grid, permutations=settings["permutations"],
                             target_se=settings["target_se"], value=settings["value"], batch_size=batch_size,
                             seed=settings["seed"], indices=indices, progress=False)


def announce_cost(model, data, todo: torch.Tensor, labels: torch.Tensor, settings: dict, players, batch_size: int,
                  device, sample: int = 256) -> None:
    """Print the cost of the images still to compute (from the first ``sample`` of them) before a build starts."""
    import sys

    from advkit.plugin import world
    from advkit_csa.cost import bank_cost, cost_line

    sel = todo[:sample]
    xs = torch.stack([data[int(i)][0] for i in sel]).float().to(device)
    was_training = model.training
    model.eval()
    try:
        cost = bank_cost(model, xs, labels[sel].to(device), len(todo), settings, players, batch_size)
    finally:
        model.train(was_training)
    print(f"advkit: {cost_line(cost, settings, world()[1])}", file=sys.stderr, flush=True)


def build_bank(
    model,
    data,
    *,
    out,
    per_class: int = 150,
    estimator: str = "gradient",
    pairs: int = DEFAULT_PAIRS,
    target_loss: float | None = DEFAULT_TARGET_LOSS,
    permutations: int = 64,
    target_se: float | None = None,
    grid=None,
    value: str = "prob",
    batch_size: int | None = None,
    chunk: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> tuple[NFCBank, Path]:
    """Compute (or load from ``out``) the NFC bank of ``model`` on ``data``; returns it and its file.

    ``estimator="gradient"`` uses ``pairs`` and ``target_loss``;
    ``"permutation"`` uses ``permutations`` and ``target_se``. Under
    ``torchrun`` the ranks share the chunks of ``chunk`` images and all return
    the same bank.
    """
    if int(per_class) < 1 or int(chunk) < 1:
        raise UserError(f"csa bank: per_class and chunk must be >= 1, got {per_class!r} and {chunk!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise UserError(f"csa bank: --batch-size must be >= 1, got {batch_size!r}")
    info = data.info
    chosen = _choose(data, per_class, seed, grid)
    settings = estimator_settings(estimator, players=chosen.players, pairs=pairs, target_loss=target_loss,
                                  permutations=permutations, target_se=target_se, value=value, per_class=per_class, seed=seed)
    fingerprint = model_fingerprint(model)
    key = bank_key(fingerprint, info.name, info.split, chosen.indices, settings)
    out = Path(out)
    path = out / f"nfc-bank-{key}.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        return NFCBank.load(path), path
    _ensure_writable(out)
    t = _compute(model, data, chosen, settings, out, key, batch_size, int(chunk), progress)
    meta = {"format": FORMAT, "key": key, "model_fingerprint": fingerprint, "dataset": info.name, "split": info.split,
            "num_classes": info.num_classes, "input_shape": list(info.input_shape),
            "players": chosen.players.describe(), "settings": settings, "images": len(chosen.positions),
            "forward_passes": int(t["passes"].sum())}
    bank = NFCBank(t["real"], t["imag"], chosen.labels[chosen.positions].long(), chosen.indices.long(), t["values"],
                   t["stderr"], meta, t["passes"])
    _save_from_main(bank, path, out, key)
    return bank, path


@dataclass(frozen=True)
class _Chosen:
    """The images a bank is built from: ``positions`` in the data, their dataset ``indices``.

    ``labels``: of every image of the data; ``players``: the frequency players of its images.
    """

    players: object
    labels: torch.Tensor
    positions: torch.Tensor
    indices: torch.Tensor


def _choose(data, per_class: int, seed: int, grid) -> _Chosen:
    """The players and the ``per_class`` images of each class of ``data`` that the bank holds."""
    from advkit_csa.players import FrequencyPlayers

    info = data.info
    players = FrequencyPlayers(tuple(info.input_shape)[-2:], grid)
    labels = dataset_labels(data)
    positions = choose_images(labels, info.num_classes, int(per_class), seed)
    given = getattr(data, "indices", None)
    indices = torch.as_tensor(given, dtype=torch.long)[positions] if given is not None else positions
    return _Chosen(players, labels, positions, indices)


def _ensure_writable(out: Path) -> None:
    """Create the directory ``out``; a :class:`UserError` when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise UserError(f"cannot write the NFC bank into {out}: {exc.strerror or exc}") from None


def _compute(model, data, chosen: _Chosen, settings: dict, out: Path, key: str, batch_size: int | None, chunk: int,
             progress: bool) -> dict:
    """The bank's tensors, computed by chunks of ``chunk`` images (partial files in ``out``: resumed, shared by ranks)."""
    from advkit.plugin import is_main
    from advkit_csa.shards import chunk_bounds, missing_chunks, run_chunks

    device = next(iter(model.parameters())).device
    batch_size = int(batch_size) if batch_size is not None else default_batch_size(device)
    positions, labels, players = chosen.positions, chosen.labels, chosen.players

    def compute(a: int, b: int) -> dict:
        sel = positions[a:b]
        xs = torch.stack([data[int(i)][0] for i in sel]).float().to(device)
        r = _estimate(model, xs, labels[sel].to(device), settings, players, batch_size, chosen.indices[a:b].tolist())
        spec = nfc_spectra(xs, r.values.to(device), players).cpu()
        return {"values": r.values, "stderr": r.stderr, "real": spec.real, "imag": spec.imag, "passes": r.passes}

    missing = missing_chunks(out, key, len(positions), chunk)
    if progress and missing and is_main():
        todo = torch.cat([torch.arange(a, b) for a, b in (chunk_bounds(len(positions), chunk)[c] for c in missing)])
        announce_cost(model, data, positions[todo], labels, settings, players, batch_size, device)
    return run_chunks(out, key, len(positions), chunk, compute, progress=progress, desc=f"NFC bank ({data.info.name})",
                      missing=missing)


def _save_from_main(bank: NFCBank, path: Path, out: Path, key: str) -> None:
    """Once every rank has read the chunk files, the main rank writes the bank and removes them."""
    from advkit.plugin import barrier, is_main
    from advkit_csa.shards import remove_partials

    barrier()  # every rank has read the chunk files
    if is_main():
        bank.save(path)
        remove_partials(out, key)
    barrier()
