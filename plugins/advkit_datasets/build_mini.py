"""Build the embedded ``fmnist-mini`` subset from the full Fashion-MNIST IDX files.

Takes the first ``per_class`` images of each class, in file order, from the
official train and test splits (Debian's ``dataset-fashion-mnist`` installs them
under /usr/share/datasets/fashion-mnist; MIT licence) and writes them as uint8
to ``data/fmnist_mini.npz``::

    python -m advkit_datasets.build_mini --source /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of every class, in file order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    return np.sort(keep)


def build(source: Path, out: Path, train_per_class: int = 1000, test_per_class: int = 200) -> dict:
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images = read_idx(source / FILES[split][0])
        labels = read_idx(source / FILES[split][1])
        idx = first_per_class(labels, per_class)
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx]
        arrays[f"{split}_index"] = idx.astype(np.int32)  # position in the official split
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {k: v.shape for k, v in arrays.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "fmnist_mini.npz")
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--test-per-class", type=int, default=200)
    a = p.parse_args()
    print(build(a.source, a.out, a.train_per_class, a.test_per_class))


if __name__ == "__main__":
    main()
