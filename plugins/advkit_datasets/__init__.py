"""Built-in datasets: the embedded Fashion-MNIST subset, torchvision sets, image folders, ImageNet and corruptions.

``fmnist-mini`` ships inside this package (``data/fmnist_mini.npz``, made by
:mod:`advkit_datasets.build_mini`): the first 1,000 training and 200 test images
of each Fashion-MNIST class, so that advkit works offline with no flag.
The torchvision sets read from ``--data-dir`` and download only when allowed;
ImageNet, CIFAR-10-C and ImageNet-C (:mod:`advkit_datasets.scale`) and image folders
(:mod:`advkit_datasets.folder`) are read from files already on disk.
"""

from __future__ import annotations

from pathlib import Path

from advkit.plugin import Range, hookimpl
from advkit_datasets import folder, scale

DATA = Path(__file__).parent / "data"

FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# name: (torchvision class, num_classes, input shape, mean, std, default eps, classes)
TORCHVISION = {
    "cifar10": ("CIFAR10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "8/255", CIFAR10_CLASSES),
    "cifar100": ("CIFAR100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "8/255", []),
    "svhn": ("SVHN", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "8/255", [str(i) for i in range(10)]),
    "mnist": ("MNIST", 10, (1, 28, 28), (0.1307,), (0.3081,), "0.3", [str(i) for i in range(10)]),
    "fashion-mnist": ("FashionMNIST", 10, (1, 28, 28), (0.2860,), (0.3530,), "0.1", FMNIST_CLASSES),
}


def fmnist_mini(split: str, data_dir: str | None = None):
    """Embedded Fashion-MNIST subset (10,000 train / 2,000 test, 28x28 grey); works offline."""
    import numpy as np
    import torch

    from advkit.plugin import DataInfo, ImageData, TensorImages

    arrays = np.load(DATA / "fmnist_mini.npz")
    images = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)
    labels = torch.from_numpy(arrays[f"{split}_labels"].astype("int64"))
    info = DataInfo(
        "fmnist-mini", 10, (1, 28, 28), (0.2860,), (0.3530,), FMNIST_CLASSES, default_eps="0.1",
        source="embedded Fashion-MNIST subset (MIT licence)",
    )
    return ImageData(TensorImages(images, labels), info)


def in_memory(base):
    """The arrays torchvision read, as uint8 (N, C, H, W) images in memory: the engines then batch them on the
    device instead of decoding every image through ``ToTensor`` at every epoch (same values: x / 255)."""
    import numpy as np
    import torch

    from advkit.plugin import TensorImages

    images = torch.as_tensor(np.asarray(base.data))
    if images.dim() == 3:  # MNIST-like: (N, H, W)
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):  # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(getattr(base, "targets", None) if hasattr(base, "targets") else base.labels))
    return TensorImages(images.contiguous(), labels.long())


def _torchvision_factory(name: str):
    cls_name, k, shape, mean, std, eps, classes = TORCHVISION[name]

    def factory(split: str, data_dir: str | None = None, download: bool = False):
        import torchvision
        from torchvision import transforms

        from advkit.plugin import DataInfo, ImageData, UserError
        from advkit_datasets.scale import data_root

        root = str(data_root(data_dir))
        cls = getattr(torchvision.datasets, cls_name)
        tf = transforms.ToTensor()
        kwargs = {"split": split} if cls_name == "SVHN" else {"train": split == "train"}
        try:
            base = cls(root, transform=tf, download=download, **kwargs)
        except RuntimeError as exc:
            raise UserError(
                f"{name} ({split}) not found under {root}: put the torchvision files there "
                f"(--data-dir DIR), or pass '{name}:download=true' when online ({exc})"
            ) from None
        except OSError as exc:
            raise UserError(f"{name}: download failed ({exc}); put the files under {root} and use --data-dir") from None
        names = list(getattr(base, "classes", None) or classes)
        info = DataInfo(name, k, shape, mean, std, names, default_eps=eps, source=f"torchvision {cls_name}")
        return ImageData(in_memory(base), info)

    factory.__doc__ = f"{cls_name} via torchvision, read from --data-dir (download=true when online)."
    return factory


@hookimpl
def advkit_register_datasets(register):
    register("fmnist-mini", fmnist_mini, default=True, usual_eps="0.1")
    for name in TORCHVISION:
        register(name, _torchvision_factory(name), aliases=("fmnist",) if name == "fashion-mnist" else (),
                 usual_eps=TORCHVISION[name][5])
    register("imagefolder", folder.imagefolder, aliases=("folder",), reads_folders=True,
             ranges={"size": Range(0, 8192), "workers": Range(-1, 256)})
    register("imagenet", scale.imagenet, usual_eps="4/255")
    register("cifar10-c", scale.cifar10_c, usual_eps="8/255")
    register("imagenet-c", scale.imagenet_c, usual_eps="4/255")
