"""The class-wise bank of negative frequency components (NFC), built once and cached on disk.

For ``per_class`` images ``X`` of each class (drawn with ``seed``) the bank
keeps ``p_X = 1[phi < 0] * F(X)``: the DFT of ``X`` (per channel, the unshifted
layout of ``torch.fft.fft2``) on the frequencies whose player has a negative
Shapley value under a pretrained model. The DC cell is never a player, so it
is never in ``p_X`` (the reference removes the centre too).

Files (through :mod:`advkit.checkpoint`): ``nfc-bank-<key>.safetensors`` with
``real``, ``imag`` (M, C, H, W), ``labels``, ``indices`` (dataset indices),
``values``/``stderr`` (M, P); and ``nfc-bank-<key>.json`` with the settings.
``key`` hashes the model fingerprint (sha256 of its state-dict tensors), the
dataset name, split and chosen indices, and the estimator settings: the same
request finds the same file and computes nothing. While building,
``nfc-bank-<key>.partial.*`` holds the images done so far (written after every
chunk); re-running continues from there, and as every image's permutations
come from its own seed, a resumed bank equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from advkit.errors import UserError

FORMAT = "advkit-csa-bank/1"


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the state-dict tensors."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
        from advkit.checkpoint import atomic_write_json, save_tensors

        save_tensors(path, {
            "real": self.real, "imag": self.imag, "labels": self.labels, "indices": self.indices,
            "values": self.values, "stderr": self.stderr}, {"format": FORMAT})
        atomic_write_json(path.with_suffix(".json"), self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "NFCBank":
        """Load a bank from its ``.safetensors``/``.json`` pair, or a directory holding exactly one."""
        from advkit.checkpoint import load_tensors

        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.glob("nfc-bank-*.safetensors") if ".partial" not in p.name)
            if len(found) != 1:
                what = "no bank" if not found else f"{len(found)} banks ({', '.join(p.name for p in found)})"
                raise UserError(f"{path} holds {what}; pass the file (nfc-bank-<key>.safetensors)")
            path = found[0]
        side = path.with_suffix(".json")
        if not side.is_file():
            raise UserError(f"NFC bank {path} has no {side.name}")
        meta = json.loads(side.read_text())
        if meta.get("format") != FORMAT:
            raise UserError(f"{path} is not an NFC bank ({FORMAT})")
        t = load_tensors(path.with_suffix(".safetensors"))
        return cls(t["real"], t["imag"], t["labels"].long(), t["indices"].long(), t["values"], t["stderr"], meta)


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


def build_bank(
    model,
    data,
    *,
    out,
    per_class: int = 150,
    permutations: int = 64,
    target_se: float | None = None,
    grid=None,
    value: str = "prob",
    batch_size: int = 1024,
    chunk: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> tuple[NFCBank, Path]:
    """Compute (or load from ``out``) the NFC bank of ``model`` on ``data``; returns it and its file."""
    from advkit.checkpoint import atomic_write_json, load_tensors, save_tensors
    from advkit_csa.players import FrequencyPlayers
    from advkit_csa.shapley import frequency_shapley

    if int(per_class) < 1:
        raise UserError(f"csa bank: per_class must be >= 1, got {per_class!r}")
    info = data.info
    shape = tuple(info.input_shape)
    players = FrequencyPlayers(shape[-2:], grid)
    labels = dataset_labels(data)
    positions = choose_images(labels, info.num_classes, int(per_class), seed)
    base_idx = torch.as_tensor(data.indices, dtype=torch.long)[positions] if getattr(data, "indices", None) is not None else positions
    settings = {"grid": list(players.grid), "permutations": int(permutations), "target_se": target_se, "value": value,
                "per_class": int(per_class), "seed": int(seed), "antithetic": True, "control_variate": True}
    fingerprint = model_fingerprint(model)
    key = bank_key(fingerprint, info.name, info.split, base_idx, settings)
    out = Path(out)
    path = out / f"nfc-bank-{key}.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        return NFCBank.load(path), path

    partial = out / f"nfc-bank-{key}.partial.safetensors"
    partial_json = out / f"nfc-bank-{key}.partial.json"
    m = len(positions)
    p = players.num_players
    values = torch.zeros(m, p)
    stderr = torch.zeros(m, p)
    real = torch.zeros(m, *shape)
    imag = torch.zeros(m, *shape)
    done = 0
    if partial.is_file():
        t = load_tensors(partial)
        if t["values"].shape == values.shape:
            done = int(t["done"])
            for name, dst in (("values", values), ("stderr", stderr), ("real", real), ("imag", imag)):
                dst[:done] = t[name][:done]
    device = next(iter(model.parameters())).device
    bar = None
    if progress and done < m:
        from tqdm.auto import tqdm

        bar = tqdm(total=m, initial=done, desc=f"NFC bank ({info.name})", unit="img")
    try:
        while done < m:
            sel = positions[done : done + int(chunk)]
            xs = torch.stack([data[int(i)][0] for i in sel]).float()
            ys = labels[sel]
            r = frequency_shapley(model, xs.to(device), ys.to(device), grid=players.grid, permutations=permutations,
                                  target_se=target_se, value=value, batch_size=batch_size, seed=seed,
                                  indices=base_idx[done : done + len(sel)].tolist(), progress=False)
            spec = nfc_spectra(xs.to(device), r.values.to(device), players).cpu()
            k = len(sel)
            values[done : done + k], stderr[done : done + k] = r.values, r.stderr
            real[done : done + k], imag[done : done + k] = spec.real, spec.imag
            done += k
            save_tensors(partial, {"values": values, "stderr": stderr, "real": real, "imag": imag,
                                   "done": torch.tensor(done)}, {"key": key})
            atomic_write_json(partial_json, {"key": key, "done": done, "total": m})
            if bar is not None:
                bar.update(k)
    finally:
        if bar is not None:
            bar.close()
    meta = {"format": FORMAT, "key": key, "model_fingerprint": fingerprint, "dataset": info.name, "split": info.split,
            "num_classes": info.num_classes, "input_shape": list(shape), "players": players.describe(),
            "settings": settings, "images": m}
    bank = NFCBank(real, imag, labels[positions].long(), base_idx.long(), values, stderr, meta)
    bank.save(path)
    partial.unlink(missing_ok=True)
    partial_json.unlink(missing_ok=True)
    return bank, path
