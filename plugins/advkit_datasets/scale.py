"""Datasets at scale: ImageNet (validation folder), CIFAR-10-C and ImageNet-C.

Files are read where they are (``--data-dir``, ``$ADVKIT_DATA_DIR`` or
``~/.cache/advkit/data``, or ``root=DIR``); nothing is downloaded. Image folders go
through torchvision (``datasets.ImageNet`` or ``datasets.ImageFolder``), labels are the
standard ImageNet class index (timm's ``ImageNetInfo``: the 1,000 WordNet ids in the
order every ImageNet model uses). CIFAR-10-C's ``.npy`` arrays have no torchvision or
importable loader, so they are read with numpy here.

:class:`advkit_datasets.files.FileImages` is what these factories return: ``first(n)`` picks a class-balanced
seeded subset when ``subset=balanced`` (the default for the ImageNet sets, whose files are
sorted by class), and ``tensors()`` reads the files through a ``DataLoader`` with worker
processes and pinned memory (on CUDA machines).
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)  # the 15 benchmark corruptions of Hendrycks & Dietterich (2019), then the 4 extra ones


def data_root(data_dir: str | None) -> Path:
    """Where dataset files live: ``--data-dir``, else ``$ADVKIT_DATA_DIR``, else ``~/.cache/advkit/data``."""
    return Path(data_dir or os.environ.get("ADVKIT_DATA_DIR") or os.path.expanduser("~/.cache/advkit/data"))


def _standard_index() -> tuple[dict[str, int], list[str]]:
    """WordNet id -> standard ImageNet class index, and the class names in that order (timm's tables)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = [info.index_to_label_name(i) for i in range(info.num_classes())]
    names = [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
    return {w: i for i, w in enumerate(wnids)}, names


def _to_standard_index(folder, where: Path) -> list[int]:
    """Relabel an ImageFolder whose classes are WordNet ids with the standard class index."""
    from advkit.plugin import UserError

    index, _ = _standard_index()
    wnids = list(getattr(folder, "wnids", None) or folder.classes)
    bad = [w for w in wnids if w not in index]
    if bad:
        raise UserError(f"{where}: class folder {bad[0]!r} is not an ImageNet WordNet id (expected names like n01440764)")
    folder.samples = [(path, index[wnids[t]]) for path, t in folder.samples]
    folder.imgs = folder.samples
    folder.targets = [t for _, t in folder.samples]
    return folder.targets


def _find(candidates: list[Path], inner: str) -> Path | None:
    return next((c for c in candidates if (c / inner).is_dir()), None)


def imagenet(split: str, data_dir: str | None = None, root: str = "", subset: str = "balanced", seed: int = 0,
             workers: int = -1):
    """ImageNet (val for test): DIR/val/<wnid>/*.JPEG or torchvision's layout, Resize 256 + CenterCrop 224"""
    from torchvision import datasets, transforms

    from advkit.plugin import DataInfo, UserError

    folder_split = "val" if split == "test" else "train"
    candidates = [Path(root)] if root else [data_root(data_dir) / "imagenet", data_root(data_dir)]
    base = _find(candidates, folder_split)
    if base is None:
        raise UserError(f"imagenet ({folder_split}) not found: put the images in DIR/{folder_split}/<wnid>/*.JPEG "
                        f"(class folders named by WordNet id; torchvision's ImageNet layout with meta.bin also works) "
                        f"and pass --data-dir DIR or imagenet:root=DIR (looked in {', '.join(map(str, candidates))})")
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    try:
        if (base / "meta.bin").is_file():
            folder = datasets.ImageNet(str(base), split=folder_split, transform=tf)
        else:
            folder = datasets.ImageFolder(str(base / folder_split), transform=tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"imagenet ({folder_split}) under {base}: {exc}") from None
    labels = _to_standard_index(folder, base / folder_split)
    info = DataInfo("imagenet", 1000, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, _standard_index()[1],
                    default_eps="4/255", source=f"ImageNet {folder_split} folder {base / folder_split} "
                    f"(Resize 256, CenterCrop 224; {len(set(labels))} classes present)")
    from advkit_datasets.files import file_images

    return file_images(folder, info, labels=labels, subset=subset, seed=seed, workers=workers)


def _check_corruption(corruption: str, severity: int, dataset: str) -> None:
    from advkit.plugin import UserError, closest

    if not corruption:
        raise UserError(f"{dataset} needs a corruption: {dataset}:corruption=NAME,severity=1..5 "
                        f"with NAME one of {', '.join(CORRUPTIONS)}")
    if corruption not in CORRUPTIONS:
        hits = closest(corruption, CORRUPTIONS)
        hint = f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
        raise UserError(f"{dataset}: unknown corruption {corruption!r}{hint} (one of {', '.join(CORRUPTIONS)})")
    if not 1 <= int(severity) <= 5:
        raise UserError(f"{dataset}: severity must be 1 to 5, got {severity}")


def cifar10_c(split: str, data_dir: str | None = None, root: str = "", corruption: str = "", severity: int = 5,
              subset: str = "first", seed: int = 0):
    """CIFAR-10-C (test only): DIR/CIFAR-10-C/<corruption>.npy + labels.npy; cifar10-c:corruption=fog,severity=3"""
    import numpy as np
    import torch

    from advkit.plugin import DataInfo, TensorImages, UserError
    from advkit_datasets import CIFAR10_CLASSES

    _check_corruption(corruption, severity, "cifar10-c")
    if split != "test":
        raise UserError("cifar10-c has a test split only (corrupted CIFAR-10 test images)")
    candidates = [Path(root)] if root else [data_root(data_dir) / "CIFAR-10-C", data_root(data_dir)]
    base = next((c for c in candidates if (c / f"{corruption}.npy").is_file() and (c / "labels.npy").is_file()), None)
    if base is None:
        raise UserError(f"cifar10-c: {corruption}.npy and labels.npy not found: put CIFAR-10-C's files in "
                        f"DIR/CIFAR-10-C/ and pass --data-dir DIR or cifar10-c:root=DIR "
                        f"(looked in {', '.join(map(str, candidates))})")
    images = np.load(base / f"{corruption}.npy", mmap_mode="r")
    labels = np.load(base / "labels.npy", mmap_mode="r")
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) % 5 or len(labels) != len(images):
        raise UserError(f"cifar10-c: {base / (corruption + '.npy')} has shape {images.shape} and labels.npy "
                        f"{labels.shape}; expected (5*N, 32, 32, 3) uint8 and (5*N,) (5 severities of N images)")
    per = len(images) // 5
    rows = slice((int(severity) - 1) * per, int(severity) * per)
    x = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(labels[rows]).astype("int64"))
    name = f"cifar10-c:corruption={corruption},severity={severity}"
    info = DataInfo(name, 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), CIFAR10_CLASSES,
                    default_eps="8/255", source=f"CIFAR-10-C {base} ({corruption}, severity {severity})")
    from advkit_datasets.files import file_images

    return file_images(TensorImages(x, y), info, labels=y.tolist(), subset=subset, seed=seed, workers=0)


def imagenet_c(split: str, data_dir: str | None = None, root: str = "", corruption: str = "", severity: int = 5,
               subset: str = "balanced", seed: int = 0, workers: int = -1):
    """ImageNet-C (test only): DIR/ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG, CenterCrop 224"""
    from torchvision import datasets, transforms

    from advkit.plugin import DataInfo, UserError

    _check_corruption(corruption, severity, "imagenet-c")
    if split != "test":
        raise UserError("imagenet-c has a test split only (corrupted ImageNet validation images)")
    inner = f"{corruption}/{int(severity)}"
    candidates = [Path(root)] if root else [data_root(data_dir) / "ImageNet-C", data_root(data_dir)]
    base = _find(candidates, inner)
    if base is None:
        raise UserError(f"imagenet-c: {inner}/ not found: put ImageNet-C's folders in "
                        f"DIR/ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG and pass --data-dir DIR or "
                        f"imagenet-c:root=DIR (looked in {', '.join(map(str, candidates))})")
    # ImageNet-C images are already 224x224 crops; Hendrycks & Dietterich evaluate them with CenterCrop(224)
    tf = transforms.Compose([transforms.CenterCrop(224), transforms.ToTensor()])
    folder = datasets.ImageFolder(str(base / inner), transform=tf)
    labels = _to_standard_index(folder, base / inner)
    name = f"imagenet-c:corruption={corruption},severity={severity}"
    info = DataInfo(name, 1000, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, _standard_index()[1],
                    default_eps="4/255", source=f"ImageNet-C {base / inner} (CenterCrop 224)")
    from advkit_datasets.files import file_images

    return file_images(folder, info, labels=labels, subset=subset, seed=seed, workers=workers)
