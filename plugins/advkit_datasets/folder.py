"""Image folders (``ROOT/<class>/*.png``) through torchvision's ``ImageFolder``, checked file by file.

A file that is not a readable image stops the run with one line naming it, also when
it is first decoded inside a DataLoader worker; images of different sizes are refused
with the sizes found unless ``size=N`` resizes them all to N x N.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from advkit.errors import UserError


class UnreadableImage(UserError):
    """A file of an image folder that PIL cannot read.

    torch's DataLoader re-raises a worker's exception as ``type(msg)`` with the worker's
    traceback in ``msg``; the constructor keeps only the original line.
    """

    def __init__(self, message: str):
        if message.startswith("Caught "):
            lines = [line for line in message.splitlines() if "UnreadableImage: " in line]
            if lines:
                message = lines[-1].split("UnreadableImage: ", 1)[1]
        super().__init__(message)


def load_rgb(path: str):
    """torchvision's default loader (PIL, converted to RGB), naming the file when it fails."""
    from PIL import Image

    try:
        with open(path, "rb") as f, Image.open(f) as img:
            return img.convert("RGB")
    except Exception as exc:
        raise UnreadableImage(f"image folder: cannot read {path} as an image ({type(exc).__name__}: {exc})") from None


def check_sizes(paths: list[str], root: Path, spec_hint: str) -> None:
    """Refuse unreadable files and, without a resize, images of different sizes (reads headers only)."""
    from PIL import Image

    sizes: Counter = Counter()
    example: dict = {}
    for path in paths:
        try:
            with Image.open(path) as img:
                size = img.size
        except Exception as exc:
            raise UnreadableImage(f"image folder: cannot read {path} as an image ({type(exc).__name__}: {exc})") from None
        sizes[size] += 1
        example.setdefault(size, path)
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h} ({k} files, e.g. {example[(w, h)]})" for (w, h), k in sizes.most_common(3))
        more = f" and {len(sizes) - 3} more sizes" if len(sizes) > 3 else ""
        raise UserError(f"images in {root} have different sizes: {found}{more}; pass {spec_hint},size=N to resize "
                        f"them all to N x N")


def imagefolder(split: str, data_dir: str | None = None, root: str = "", size: int = 0, eps: str = "8/255",
                subset: str = "first", seed: int = 0, workers: int = -1):
    """Images in ROOT/<class>/*.png (or ROOT/<split>/<class>/...), resized to size x size if given."""
    from torchvision import datasets, transforms

    from advkit.data import DataInfo
    from advkit_datasets.files import file_images

    base = Path(root or data_dir or "")
    if not base.is_dir():
        raise UserError(f"image folder {str(base)!r} does not exist (use imagefolder:root=DIR or --data-dir DIR)")
    if (base / split).is_dir():
        base = base / split
    tfs = ([transforms.Resize((size, size))] if size else []) + [transforms.ToTensor()]
    try:
        folder = datasets.ImageFolder(str(base), transform=transforms.Compose(tfs), loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"image folder {base}: {exc}") from None
    if not size:
        check_sizes([p for p, _ in folder.samples], base, f"imagefolder:root={root or base}")
    x0, _ = folder[0]
    c = x0.shape[0]
    info = DataInfo(f"imagefolder:{base}", len(folder.classes), tuple(x0.shape), (0.5,) * c, (0.5,) * c,
                    list(folder.classes), default_eps=eps, source=str(base))
    return file_images(folder, info, labels=folder.targets, subset=subset, seed=seed, workers=workers)
