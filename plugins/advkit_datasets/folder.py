"""Image folders (``ROOT/<class>/*.png``) through torchvision's ``ImageFolder``, checked file by file.

A file that is not a readable image stops the run with one line naming it, also when
it is first decoded inside a DataLoader worker; images of different sizes are refused
with the sizes found unless ``size=N`` resizes them all to N x N.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from advkit.plugin import UserError


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


def walk_once(top: str, skip: set[str] = frozenset()):
    """The files under ``top`` (sorted), following links but no directory twice nor any in ``skip``.

    A symlink loop (``a/loop -> ..``) or two links to one folder would otherwise
    count the same images many times (``os.walk(followlinks=True)`` stops only at
    the system's path-length limit).
    """
    seen_dirs: set[str] = set(skip)
    for root, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) not in seen_dirs)
        for name in sorted(files):
            yield os.path.join(root, name)


def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
    """torchvision's ``make_dataset`` through :func:`walk_once`: each real file counts once, in the first
    class (in sorted order) where it is found; a link back to the root or into another class folder is not followed."""
    from torchvision.datasets.folder import has_file_allowed_extension

    valid = is_valid_file or (lambda p: has_file_allowed_extension(p, extensions))
    seen: set[str] = set()
    out = []
    folders = {cls: os.path.realpath(os.path.join(directory, cls)) for cls in class_to_idx}
    for cls in sorted(class_to_idx):
        folder = os.path.join(directory, cls)
        skip = {os.path.realpath(directory)} | {f for c, f in folders.items() if c != cls}
        for path in (walk_once(folder, skip) if os.path.isdir(folder) else ()):
            real = os.path.realpath(path)
            if valid(path) and real not in seen and os.path.isfile(real):
                seen.add(real)
                out.append((path, class_to_idx[cls]))
    found = {t for _, t in out}
    empty = [cls for cls in sorted(class_to_idx) if class_to_idx[cls] not in found]
    if empty and not allow_empty:
        raise FileNotFoundError(f"no image file of its own in the class folder(s) {', '.join(empty)} (a file "
                                f"reached through links counts once, in the first class that holds it)")
    return out


def _folder_class():
    from torchvision import datasets

    class OnceImageFolder(datasets.ImageFolder):
        """torchvision's ``ImageFolder`` that counts each file once (see :func:`make_dataset`)."""

        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
            return make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)

    return OnceImageFolder


def imagefolder(split: str, data_dir: str | None = None, root: str = "", size: int = 0, eps: str = "8/255",
                subset: str = "first", seed: int = 0, workers: int = -1):
    """Images in ROOT/<class>/*.png (or ROOT/<split>/<class>/...), resized to size x size if given."""
    from torchvision import transforms

    from advkit.plugin import DataInfo
    from advkit_datasets.files import file_images

    base = Path(root or data_dir or "")
    if not base.is_dir():
        raise UserError(f"image folder {str(base)!r} does not exist (use imagefolder:root=DIR or --data-dir DIR)")
    if (base / split).is_dir():
        base = base / split
    tfs = ([transforms.Resize((size, size))] if size else []) + [transforms.ToTensor()]
    try:
        folder = _folder_class()(str(base), transform=transforms.Compose(tfs), loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"image folder {base}: {exc}") from None
    if not size:
        check_sizes([p for p, _ in folder.samples], base, f"imagefolder:root={root or base}")
    x0, _ = folder[0]
    c = x0.shape[0]
    info = DataInfo(f"imagefolder:{base}", len(folder.classes), tuple(x0.shape), (0.5,) * c, (0.5,) * c,
                    list(folder.classes), default_eps=eps, source=str(base))
    return file_images(folder, info, labels=folder.targets, subset=subset, seed=seed, workers=workers)
