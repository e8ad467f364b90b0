"""Datasets at scale (ImageNet, CIFAR-10-C, ImageNet-C) and image-folder checks, on tiny files in the real layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advkit._internal.data import load_dataset
from advkit._internal.errors import UserError

# three WordNet ids and their places in the standard ImageNet class index
WNIDS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}


def _jpeg(path: Path, size=(300, 260), seed=0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)


def _imagenet_val(root: Path, per_class: int = 4) -> Path:
    for k, wnid in enumerate(WNIDS):
        for i in range(per_class):
            _jpeg(root / "val" / wnid / f"ILSVRC2012_val_{k:04d}{i:04d}.JPEG", seed=10 * k + i)
    return root


def _reference_256_224(path: Path) -> torch.Tensor:
    """Resize the short side to 256 (PIL bilinear) and crop the centre 224, written out with PIL and numpy."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
    arr = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_imagenet_class_folders_use_the_standard_index_and_224_crops(tmp_path):
    _imagenet_val(tmp_path / "imagenet")
    data = load_dataset("imagenet", "test", data_dir=str(tmp_path), workers=0)
    assert (data.info.num_classes, data.info.input_shape, data.info.default_eps) == (1000, (3, 224, 224), "4/255")
    assert data.info.classes[0] == "tench" and len(data.info.classes) == 1000
    assert sorted(Counter(data.labels).items()) == [(0, 4), (1, 4), (999, 4)]
    x, y = data[5]
    path, label = data.base.samples[5]
    assert y == label == WNIDS[Path(path).parent.name]
    assert x.shape == (3, 224, 224)
    assert (x - _reference_256_224(Path(path))).abs().max() < 2 / 255  # PIL rounding inside the resize


def test_imagenet_torchvision_layout_with_meta_bin(tmp_path):
    root = _imagenet_val(tmp_path, per_class=1)
    torch.save(({w: (f"class {w}",) for w in WNIDS}, []), root / "meta.bin")
    data = load_dataset(f"imagenet:root={root},workers=0", "test")
    assert sorted(data.labels) == sorted(WNIDS.values())


def test_imagenet_subset_is_class_balanced_and_seeded(tmp_path):
    _imagenet_val(tmp_path)
    spec = f"imagenet:root={tmp_path},workers=0"
    six = load_dataset(spec, "test", n=6)
    assert Counter(six[i][1] for i in range(6)) == {0: 2, 1: 2, 999: 2}
    again = load_dataset(spec, "test", n=6)
    assert six.indices == again.indices
    other = [load_dataset(f"{spec},seed={s}", "test", n=6).indices for s in range(1, 6)]
    assert any(o != six.indices for o in other)
    three = load_dataset(spec, "test", n=3)
    assert set(three.indices) <= set(six.indices)
    assert Counter(three[i][1] for i in range(3)) == {0: 1, 1: 1, 999: 1}
    first = load_dataset(f"{spec},subset=first", "test", n=6)
    assert first.indices == list(range(6))


def test_file_dataset_tensors_through_workers_match_item_by_item(tmp_path):
    _imagenet_val(tmp_path, per_class=2)
    data = load_dataset(f"imagenet:root={tmp_path},workers=1", "test")
    x, y = data.tensors()
    ref = [data[i] for i in range(len(data))]
    assert torch.equal(x, torch.stack([r[0] for r in ref])) and y.tolist() == [r[1] for r in ref]
    assert x.is_contiguous()


def test_imagenet_missing_or_foreign_folders_are_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("imagenet", "test", data_dir=str(tmp_path))
    assert "put the images in DIR/val/<wnid>/*.JPEG" in str(err.value) and "\n" not in str(err.value)
    _jpeg(tmp_path / "val" / "cats" / "a.JPEG")
    with pytest.raises(UserError, match="'cats' is not an ImageNet WordNet id"):
        load_dataset(f"imagenet:root={tmp_path}", "test")


def _cifar10_c(root: Path, per: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * per, 32, 32, 3), dtype=np.uint8)
    labels = np.tile(np.arange(per) % 10, 5).astype(np.uint8)
    (root / "CIFAR-10-C").mkdir(parents=True)
    np.save(root / "CIFAR-10-C" / "fog.npy", images)
    np.save(root / "CIFAR-10-C" / "labels.npy", labels)
    return images, labels


def test_cifar10_c_reads_the_severity_block(tmp_path):
    images, labels = _cifar10_c(tmp_path)
    data = load_dataset("cifar10-c:corruption=fog,severity=3", "test", data_dir=str(tmp_path))
    x, y = data.tensors()
    expected = torch.from_numpy(images[8:12].astype(np.float32) / 255).permute(0, 3, 1, 2)
    assert torch.equal(x, expected) and y.tolist() == labels[8:12].tolist()
    assert data.info.name == "cifar10-c:corruption=fog,severity=3" and data.info.num_classes == 10
    assert x.is_contiguous()


def test_cifar10_c_errors(tmp_path):
    _cifar10_c(tmp_path)
    with pytest.raises(UserError, match="did you mean 'fog'"):
        load_dataset("cifar10-c:corruption=fgo", "test", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="severity must be 1 to 5"):
        load_dataset("cifar10-c:corruption=fog,severity=6", "test", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="needs a corruption"):
        load_dataset("cifar10-c", "test", data_dir=str(tmp_path))
    with pytest.raises(UserError) as err:
        load_dataset("cifar10-c:corruption=snow", "test", data_dir=str(tmp_path))
    assert "put CIFAR-10-C's files in DIR/CIFAR-10-C/" in str(err.value)


def test_imagenet_c_layout(tmp_path):
    for k, wnid in enumerate(WNIDS):
        for i in range(2):
            _jpeg(tmp_path / "ImageNet-C" / "fog" / "3" / wnid / f"{i}.JPEG", size=(224, 224), seed=k * 2 + i)
    data = load_dataset("imagenet-c:corruption=fog,severity=3,workers=0", "test", data_dir=str(tmp_path), n=3)
    assert sorted(data[i][1] for i in range(3)) == [0, 1, 999]
    x, _ = data[0]
    path = data.base.samples[data.indices[0]][0]
    ref = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(x, ref)  # already 224x224: the centre crop keeps every pixel
    with pytest.raises(UserError, match="fog/2/ not found"):
        load_dataset("imagenet-c:corruption=fog,severity=2", "test", data_dir=str(tmp_path))


def _png(path: Path, size, seed=0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_imagefolder_refuses_mixed_sizes_and_resizes_on_request(tmp_path):
    for i in range(3):
        _png(tmp_path / "a" / f"{i}.png", (16, 16), seed=i)
    _png(tmp_path / "b" / "odd.png", (20, 12))
    with pytest.raises(UserError) as err:
        load_dataset(f"imagefolder:root={tmp_path}", "test")
    msg = str(err.value)
    assert "16x16 (3 files" in msg and "20x12 (1 files" in msg and "odd.png" in msg and "size=N" in msg
    data = load_dataset(f"imagefolder:root={tmp_path},size=8,workers=0", "test")
    assert data.tensors()[0].shape == (4, 3, 8, 8)


def test_imagefolder_names_a_file_that_is_not_an_image(tmp_path):
    for i in range(2):
        _png(tmp_path / "a" / f"{i}.png", (8, 8), seed=i)
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="cannot read .*broken.png"):
        load_dataset(f"imagefolder:root={tmp_path}", "test")


@pytest.mark.parametrize("workers", [0, 1])
def test_imagefolder_truncated_image_is_one_line_also_from_a_worker(tmp_path, workers):
    for i in range(2):
        _png(tmp_path / "a" / f"{i}.png", (8, 8), seed=i)
    good = (tmp_path / "a" / "0.png").read_bytes()
    (tmp_path / "a" / "2.png").write_bytes(good[: len(good) // 2])  # header intact, pixel data cut
    data = load_dataset(f"imagefolder:root={tmp_path},workers={workers}", "test")
    with pytest.raises(UserError) as err:
        data.tensors()
    assert "\n" not in str(err.value) and str(tmp_path / "a" / "2.png") in str(err.value)


def test_list_datasets_shows_the_new_sets():
    from click.testing import CliRunner

    from advkit._internal.cli import cli

    out = CliRunner().invoke(cli, ["list", "datasets"]).output
    for name in ("imagenet", "cifar10-c", "imagenet-c", "imagefolder"):
        assert f"\n  {name} " in out
    assert "corruption=''" in out and "subset='balanced'" in out
