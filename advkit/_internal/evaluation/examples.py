"""``--save-adv N``: the first adversarial examples of every attack, as tensors and as a picture.

For each attack the evaluation keeps the first ``N`` points it attacked (in
the order it attacked them), and writes ``OUT/adv/<stage>.safetensors``
(``index``, ``label``, ``clean``, ``adv``, ``pred``: the prediction on
``adv``) and ``OUT/adv/<stage>.png``: one column per point, rows clean /
adversarial / perturbation amplified ``k`` times around grey, captioned with
the label and the prediction. Batches read back from an earlier run are not
attacked again, so a resumed run keeps only what it computed itself (the
report says how many).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch


class Keeper:
    """Collects up to ``limit`` adversarial examples per stage as batches are attacked."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.kept: dict[str, dict[str, list]] = {}

    def add(self, stage: str, index: list[int], y, clean, adv, pred) -> None:
        store = self.kept.setdefault(stage, {"index": [], "label": [], "clean": [], "adv": [], "pred": []})
        room = self.limit - len(store["index"])
        if room <= 0:
            return
        k = min(room, len(index))
        store["index"] += list(index[:k])
        for name, t in (("label", y), ("clean", clean), ("adv", adv), ("pred", pred)):
            store[name].append(t[:k].detach().cpu())

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per stage: ``index``, ``label``, ``clean``, ``adv``, ``pred`` as tensors (all ranks gathered)."""
        from advkit._internal import distributed as D

        merged: dict[str, dict[str, list]] = {}
        for part in D.all_gather(self.kept):
            for stage, store in part.items():
                m = merged.setdefault(stage, {"index": [], "label": [], "clean": [], "adv": [], "pred": []})
                m["index"] += store["index"]
                for name in ("label", "clean", "adv", "pred"):
                    m[name] += store[name]
        out = {}
        for stage, m in merged.items():
            if not m["index"]:
                continue
            order = sorted(range(len(m["index"])), key=lambda i: m["index"][i])[: self.limit]
            full = {name: torch.cat(m[name]) for name in ("label", "clean", "adv", "pred")}
            out[stage] = {"index": torch.tensor(m["index"])[order], **{k: v[order] for k, v in full.items()}}
        return out


def amplification(threat) -> float:
    """How much the perturbation is magnified in the picture: a full-budget Linf step reaches +-0.5."""
    eps = float(threat.eps)
    return 0.5 / eps if threat.norm == "Linf" and eps > 0 else 10.0


def picture(t: dict[str, torch.Tensor], k: float, classes: list[str], title: str) -> bytes:
    """Clean / adversarial / perturbation x k (around grey) per column, with label and prediction."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = t["clean"].shape[0]
    delta = (0.5 + k * (t["adv"] - t["clean"])).clamp(0, 1)
    rows = [("clean", t["clean"]), ("adversarial", t["adv"]), (f"perturbation x{k:g}", delta)]
    fig, axes = plt.subplots(3, n, figsize=(1.4 * n + 0.4, 4.6), dpi=110, squeeze=False)

    def name(c) -> str:
        c = int(c)
        return classes[c] if c < len(classes) else str(c)

    for r, (label, images) in enumerate(rows):
        for c in range(n):
            a = images[c].float().numpy()
            ax = axes[r][c]
            ax.axis("off")
            ax.imshow(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0), cmap="gray" if a.shape[0] == 1 else None,
                      vmin=0, vmax=1)
            if r == 0:
                ax.set_title(f"#{int(t['index'][c])} {name(t['label'][c])}", fontsize=6)
            if r == 1:
                ax.set_title(f"-> {name(t['pred'][c])}", fontsize=6)
        axes[r][0].text(-0.1, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7,
                        rotation=90)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_examples(keeper: Keeper, out: Path, threat, classes: list[str]) -> list[str]:
    """Write every stage's examples under ``out/adv`` (rank 0 under torchrun); return the file stems."""
    from advkit._internal import distributed as D
    from advkit._internal.checkpoint import save_tensors
    from advkit._internal.files import atomic_write_bytes

    written = []
    for stage, t in keeper.tensors().items():  # every rank takes part in the gathering
        stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", stage)
        written.append(stem)
        if not D.is_main():
            continue
        save_tensors(out / "adv" / f"{stem}.safetensors", t, {"stage": stage, "threat": str(threat)})
        atomic_write_bytes(out / "adv" / f"{stem}.png",
                           picture(t, amplification(threat), classes, f"{stage}: {threat}"))
    return written
