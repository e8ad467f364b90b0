"""Small helpers shared by the explainers: target classes, the explained output, reference data, batching."""

from __future__ import annotations

import torch

from advkit.plugin import UserError, closest

TARGETS = ("label", "pred")
OUTPUTS = ("logit", "probability")


def check_choice(where: str, value: str, choices) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        hits = closest(v, choices)
        hint = f" (did you mean {hits[0]!r}?)" if hits else ""
        raise UserError(f"{where} must be one of {', '.join(choices)}; got {value!r}{hint}")
    return v


def target_classes(model, x: torch.Tensor, y: torch.Tensor, target: str) -> torch.Tensor:
    """The class to explain per image: the label, or the model's prediction."""
    if check_choice("target", target, TARGETS) == "label":
        return y.to(x.device).long()
    with torch.inference_mode():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, x.shape[0], 256)])
    return pred.clone()


class Probabilities(torch.nn.Module):
    """``softmax(model(x))`` over the classes: the model whose output an attribution explains with ``output=probability``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def explained_output(model, output: str):
    """The function an attribution explains: ``model`` itself (``logit``) or its softmax (``probability``)."""
    return Probabilities(model) if check_choice("output", output, OUTPUTS) == "probability" else model


def target_logits(model, x: torch.Tensor, cls: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model(x)[i, cls[i]]`` without gradients."""
    with torch.inference_mode():
        out = torch.cat([model(x[i : i + batch_size]).gather(1, cls[i : i + batch_size, None])[:, 0] for i in range(0, x.shape[0], batch_size)])
    return out.clone()


def dataset_name(dataset: str, ctx) -> tuple[str, str | None]:
    """The reference dataset and its data dir: ``dataset``, else the one being explained (``ctx``), else fmnist-mini."""
    current, data_dir = ctx.dataset, ctx.data_dir
    name = dataset.strip() or current or "fmnist-mini"
    return name, (data_dir if name == current else None)


def reference_data(dataset: str, split: str, like: torch.Tensor, ctx, n: int = 0):
    """Images, labels and info of ``dataset`` (see :func:`dataset_name`; its first ``n``, all when 0).

    The images must have the shape of the explained ones (``like``).
    """
    from advkit.plugin import load_dataset

    name, data_dir = dataset_name(dataset, ctx)
    data = load_dataset(name, split, data_dir=data_dir, n=n if n > 0 else None)
    xs, ys = data.tensors()
    if tuple(xs.shape[1:]) != tuple(like.shape[1:]):
        raise UserError(
            f"{name} ({split}) images are {'x'.join(map(str, xs.shape[1:]))} but the explained images are "
            f"{'x'.join(map(str, like.shape[1:]))}: pass --opt dataset=NAME, the dataset being explained"
        )
    return xs.to(like.device), ys.to(like.device), data.info


def parse_ints(where: str, text: str) -> list[int]:
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"{where} must be comma-separated integers, got {text!r}") from None
