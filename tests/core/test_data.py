"""Datasets: the embedded default, torchvision sources offline, image folders, bad images."""

import pytest
import torch

from advkit._internal.data import check_images, load_dataset
from advkit._internal.errors import UserError


def test_embedded_default_is_real_balanced_fashion_mnist():
    train, test = load_dataset("fmnist-mini", "train"), load_dataset("default", "test")
    assert len(train) == 10_000 and len(test) == 2_000
    x, y = test.tensors()
    assert x.shape == (2000, 1, 28, 28) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.bincount(y).tolist() == [200] * 10
    assert test.num_classes == 10 and test.classes[0] == "T-shirt/top"
    # real images: many distinct grey levels and no duplicate between splits
    assert len(torch.unique(x[:50])) > 200
    xt, _ = train.tensors()
    assert not any(torch.equal(xt[i], x[0]) for i in range(len(xt)))


def test_first_n_and_bad_split():
    assert len(load_dataset("fmnist-mini", "test", n=10)) == 10
    with pytest.raises(UserError):
        load_dataset("fmnist-mini", "valid")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "mnist", "fashion-mnist"])
def test_torchvision_sets_offline_say_where_to_put_files(name, tmp_path):
    with pytest.raises(UserError, match=f"{name}.*not found under {tmp_path}.*--data-dir"):
        load_dataset(name, "test", data_dir=str(tmp_path))


def test_torchvision_reader_with_local_files(tmp_path):
    """IDX files in --data-dir are read by torchvision (the embedded images written out as IDX)."""
    import numpy as np

    x, y = load_dataset("fmnist-mini", "test", n=30).tensors()
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    for prefix in ("t10k", "train"):
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + np.array(imgs.shape, dtype=">i4").tobytes() + imgs.tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + np.array([len(y)], dtype=">i4").tobytes() + y.numpy().astype(np.uint8).tobytes())
    data = load_dataset("fashion-mnist", "test", data_dir=str(tmp_path))
    assert len(data) == 30 and data.num_classes == 10
    xi, yi = data[5]
    assert torch.allclose(xi, x[5], atol=1 / 255) and yi == int(y[5])
    # held in memory (the engines batch it on the device), with exactly torchvision's ToTensor values
    import torchvision
    from torchvision import transforms

    from advkit._internal.data import TensorImages

    assert isinstance(data.base, TensorImages)
    reference = torchvision.datasets.FashionMNIST(str(tmp_path), train=False, transform=transforms.ToTensor())
    xs, ys = data.tensors()
    assert torch.equal(xs, torch.stack([reference[i][0] for i in range(30)]))
    assert torch.equal(ys, torch.tensor([reference[i][1] for i in range(30)]))


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray((torch.rand(12, 12, 3) * 255).byte().numpy()).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(str(tmp_path), "test")
    assert len(data) == 6 and data.classes == ["cat", "dog"] and data.input_shape == (3, 12, 12)
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagefolder:root=/no/such/dir", "test")


def test_unknown_dataset_suggests():
    with pytest.raises(UserError, match="did you mean 'cifar10'"):
        load_dataset("cifar1O", "test")


def test_images_outside_unit_range_are_refused():
    with pytest.raises(UserError, match="0-255"):
        check_images(torch.rand(2, 1, 4, 4) * 255)
    with pytest.raises(UserError, match="normalized"):
        check_images(torch.randn(2, 1, 4, 4))


def test_torchvision_arrays_in_every_layout_match_to_tensor():
    """CIFAR keeps (N, H, W, C) numpy arrays, SVHN (N, C, H, W) with ``labels``, MNIST (N, H, W) tensors."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image
    from torchvision import transforms

    from advkit_datasets import in_memory

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    cases = [
        (SimpleNamespace(data=hwc, targets=[1, 2, 3, 4]), [Image.fromarray(a) for a in hwc]),
        (SimpleNamespace(data=hwc.transpose(0, 3, 1, 2).copy(), labels=np.array([1, 2, 3, 4])),
         [Image.fromarray(a) for a in hwc]),
        (SimpleNamespace(data=torch.from_numpy(hwc[..., 0].copy()), targets=torch.tensor([1, 2, 3, 4])),
         [Image.fromarray(a[..., 0]) for a in hwc]),
    ]
    for base, pil in cases:
        data = in_memory(base)
        expected = torch.stack([transforms.ToTensor()(p) for p in pil])
        assert torch.equal(data.images, expected) and data.labels.tolist() == [1, 2, 3, 4]
