"""Backbones from every source, normalization inside the model, and checkpoint safety."""

import json

import pytest
import torch
from torch import nn

from advkit.checkpoint import save_checkpoint
from advkit.errors import UserError
from advkit.models import ImageClassifier, load_checkpoint, load_model


class Flat(nn.Module):
    def __init__(self, num_classes=10, in_chans=1):
        super().__init__()
        self.fc = nn.Linear(in_chans * 28 * 28, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def make_flat(num_classes=10, in_chans=1):
    return Flat(num_classes, in_chans)


def make_bad_output():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))


@pytest.mark.parametrize("spec,shape", [("smallcnn", (1, 28, 28)), ("resnet18-cifar:width=8", (3, 32, 32)), ("wrn-34-10:depth=10,widen=1", (3, 32, 32))])
def test_builtin_backbones(spec, shape):
    m = load_model(spec, num_classes=7, input_shape=shape)
    assert isinstance(m, ImageClassifier) and not m.training
    assert m(torch.rand(2, *shape)).shape == (2, 7)


def test_timm_backbone_offline():
    m = load_model("timm/resnet10t", num_classes=5, input_shape=(3, 32, 32))
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert m.arch == "timm" and m.arch_params["name"] == "resnet10t"


def test_timm_pretrained_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="--weights FILE"):
        load_model("timm/resnet10t:pretrained=true", num_classes=10, input_shape=(3, 32, 32))


def test_timm_local_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet10t", num_classes=4, in_chans=3)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    m = load_model("timm/resnet10t", num_classes=4, input_shape=(3, 32, 32), weights=str(tmp_path / "w.safetensors"))
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(m(x), ref.eval()(x), atol=1e-6)


def test_user_module_factory():
    m = load_model(f"{__name__}:make_flat", num_classes=10, input_shape=(1, 28, 28))
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_normalization_is_part_of_the_model():
    torch.manual_seed(0)
    m = load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), mean=[0.5], std=[0.25])
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(m(x), m.backbone((x - 0.5) / 0.25))


def test_checkpoint_roundtrip(tmp_path):
    m = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28), mean=[0.3], std=[0.4])
    path = save_checkpoint(m, tmp_path / "model", epoch=3)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["arch"] == "smallcnn" and meta["mean"] == pytest.approx([0.3]) and meta["epoch"] == 3
    m2 = load_model(str(path))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(m(x), m2(x))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_bundled_checkpoints_load():
    m = load_model("smallcnn-fmnist")
    assert m.num_classes == 10 and m.input_shape == (1, 28, 28)


def test_unknown_backbone_suggests():
    with pytest.raises(UserError, match="did you mean 'smallcnn'"):
        load_model("smalcnn", num_classes=10, input_shape=(1, 28, 28))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_checkpoint_that_does_not_fit_the_architecture(tmp_path):
    m = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28))
    path = save_checkpoint(m, tmp_path / "model")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["arch_params"] = {"width": 64}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not fit the architecture.*shape mismatch"):
        load_checkpoint(path)


def test_corrupt_safetensors(tmp_path):
    m = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28))
    path = save_checkpoint(m, tmp_path / "model")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="not a valid safetensors"):
        load_checkpoint(path)


def test_pickled_weights_are_refused_unless_plain_tensors(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="cannot read weights"):
        load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), weights=str(tmp_path / "evil.pth"))


def test_wrong_output_shape_is_refused():
    with pytest.raises(UserError, match=r"returns \(2, 3\).*expected \(2, 10\)"):
        load_model(f"{__name__}:make_bad_output", num_classes=10, input_shape=(1, 28, 28))
