"""Backbones from every source, normalization inside the model, and checkpoint safety."""

import json

import pytest
import torch
from torch import nn

from advkit._internal.checkpoint import load_checkpoint, save_checkpoint
from advkit._internal.errors import UserError
from advkit._internal.models import ImageClassifier, load_model


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


def test_pickled_weights_are_refused_in_one_line(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError) as err:
        load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), weights=str(tmp_path / "evil.pth"))
    message = str(err.value)
    assert "\n" not in message and "holds pickled code" in message and "advkit will not run it" in message
    assert "weights_only" not in message and "pwned" not in capsys.readouterr().out


def test_plain_state_dict_in_pth_loads(tmp_path):
    m = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28))
    torch.save(m.backbone.state_dict(), tmp_path / "w.pth")
    m2 = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28), weights=str(tmp_path / "w.pth"))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(m(x), m2(x))


def test_advkit_checkpoint_as_weights(tmp_path):
    m = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28), mean=[0.3], std=[0.4])
    path = save_checkpoint(m, tmp_path / "model")
    m2 = load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28), mean=[0.3], std=[0.4], weights=str(path))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(m(x), m2(x))
    with pytest.raises(UserError, match=rf"is an advkit checkpoint \(its normalization differs.*pass it as --model {path}"):
        load_model("smallcnn:width=32", num_classes=10, input_shape=(1, 28, 28), weights=str(path))
    with pytest.raises(UserError, match=r"its layers differ.*pass it as --model"):
        load_model("smallcnn:width=64", num_classes=10, input_shape=(1, 28, 28), mean=[0.3], std=[0.4], weights=str(path))


def test_wrong_output_shape_is_refused():
    with pytest.raises(UserError, match=r"returns \(2, 3\).*expected \(2, 10\)"):
        load_model(f"{__name__}:make_bad_output", num_classes=10, input_shape=(1, 28, 28))


def test_wrong_input_shape_suggests_input_shape():
    with pytest.raises(UserError, match=r"fails on input of shape \(2, 3, 32, 32\) \(input shape the default\).*"
                                        r"pass input_shape=\(C, H, W\) or dataset="):
        load_model(f"{__name__}:make_flat")
    m = load_model(f"{__name__}:make_flat", input_shape=(1, 28, 28))
    assert m.input_shape == (1, 28, 28)


@pytest.mark.parametrize("as_what", ["data", "info", "name"])
def test_load_model_takes_shape_classes_and_normalization_from_a_dataset(fmnist_test, as_what):
    given = {"data": fmnist_test, "info": fmnist_test.info, "name": "fmnist-mini"}[as_what]
    m = load_model(f"{__name__}:make_flat", dataset=given)
    info = fmnist_test.info
    assert m.num_classes == info.num_classes and m.input_shape == tuple(info.input_shape)
    assert m.info["normalization"] == {"mean": list(info.mean), "std": list(info.std), "source": "dataset"}
    x = torch.rand(3, *info.input_shape)
    assert torch.allclose(m(x), m.backbone((x - info.mean[0]) / info.std[0]), atol=1e-6)


def test_dataset_is_overridden_by_explicit_arguments(fmnist_test):
    m = load_model(f"{__name__}:make_flat", dataset=fmnist_test, num_classes=3, mean=[0.5], std=[0.25])
    assert m.num_classes == 3 and m.info["normalization"] == {"mean": [0.5], "std": [0.25], "source": "user"}
    with pytest.raises(UserError, match="dataset= takes an ImageData"):
        load_model("smallcnn", dataset=42)


class Flat3(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def make_flat3(num_classes=10, scale: float = 1.0):
    net = Flat3(num_classes)
    net.fc.weight.data.mul_(scale)
    return net


def test_external_model_normalization_is_explicit(fmnist_test):
    x = torch.rand(4, 1, 28, 28)
    plain = load_model(f"{__name__}:make_flat:normalize=none", dataset=fmnist_test)
    assert plain.info["normalization"] == {"mean": [0.0], "std": [1.0], "source": "none"}
    assert torch.equal(plain(x), plain.backbone(x))
    user = load_model(f"{__name__}:make_flat:mean=0.5,std=1/4", dataset=fmnist_test)
    assert user.info["normalization"] == {"mean": [0.5], "std": [0.25], "source": "user"}
    assert torch.allclose(user(x), user.backbone((x - 0.5) / 0.25), atol=1e-6)
    assert user.arch == f"{__name__}:make_flat" and user.arch_params == {}


def test_per_channel_normalization_and_factory_parameters_in_the_spec():
    spec = f"{__name__}:make_flat3:scale=2,mean=0.1,0.2,0.3,std=0.5,0.25,0.125"
    torch.manual_seed(0)
    m = load_model(spec, num_classes=4, input_shape=(3, 8, 8))
    torch.manual_seed(0)
    assert torch.equal(m.backbone.fc.weight, make_flat3(4, 2.0).fc.weight)  # scale=2 reached the factory as a float
    assert m.info["normalization"] == {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 0.125], "source": "user"}
    assert m.arch_params == {"scale": 2.0}
    x = torch.rand(2, 3, 8, 8)
    expected = torch.stack([(x[:, c] - (0.1, 0.2, 0.3)[c]) / (0.5, 0.25, 0.125)[c] for c in range(3)], 1)
    assert torch.allclose(m(x), m.backbone(expected), atol=1e-5)
    reg = load_model("smallcnn:width=8,normalize=none", num_classes=10, input_shape=(1, 28, 28), mean=[0.3], std=[0.4])
    assert reg.info["normalization"]["source"] == "none" and reg.arch_params == {"width": 8}
    assert reg.backbone.fc.in_features == 8


@pytest.mark.parametrize("suffix, message", [
    ("normalize=yes", "normalize= takes only 'none'"),
    ("mean=0.5", "give both mean= and std="),
    ("mean=0.1,0.2,std=1", "need 1 mean and 1 positive std"),
    ("mean=0.5,std=0", "positive std"),
    ("mean=a,std=1", "take numbers"),
    ("normalize=none,depth", "must look like key=value"),
    ("mean=0,std=1,depth=3", "has no parameter 'depth'"),
])
def test_bad_normalization_in_the_spec(suffix, message):
    with pytest.raises(UserError, match=message):
        load_model(f"{__name__}:make_flat:{suffix}", input_shape=(1, 28, 28))


def test_checkpoint_normalization_is_the_models_own(tmp_path):
    m = load_model("smallcnn:width=8", num_classes=10, input_shape=(1, 28, 28), mean=[0.3], std=[0.4])
    assert m.info["normalization"]["source"] == "user"
    path = save_checkpoint(m, tmp_path / "model")
    assert load_model(str(path)).info["normalization"] == {"mean": [pytest.approx(0.3)], "std": [pytest.approx(0.4)],
                                                          "source": "model"}
    assert load_model("smallcnn-fmnist").info["normalization"]["source"] == "model"
    with pytest.raises(UserError, match="complete model with its own normalization.*drop normalize="):
        load_model("smallcnn-fmnist:normalize=none")


def test_unknown_backbone_suggestion_uses_only_the_registry(monkeypatch):
    """The did-you-mean never scans timm's model list (which took a minute) and answers in well under 2 s."""
    import time

    import timm

    def no_scan(*args, **kwargs):
        raise AssertionError("timm.list_models was called")

    monkeypatch.setattr(timm, "list_models", no_scan)
    load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28))  # registries and imports warm
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"unknown backbone 'resnet18-cifr'; did you mean 'resnet18-cifar'"):
        load_model("resnet18-cifr", num_classes=10, input_shape=(3, 32, 32))
    assert time.perf_counter() - start < 2.0


def test_checkpoint_names_the_plugin_package_it_needs(tmp_path):
    """The sidecar records the distribution of the backbone and of each defense; loading without it says which."""
    import types

    import advkit
    from advkit._internal import plugins
    from advkit._internal.defense import Defense

    class Widen(Defense):
        """A model-point defense of a third-party plugin."""

        def transform_model(self, backbone):
            return nn.Sequential(backbone, nn.Identity())

    module = types.ModuleType("advkit_thirdparty")
    module.advkit_register_backbones = advkit.plugin.hookimpl(lambda register: register("flat-net", make_flat))
    module.advkit_register_defenses = advkit.plugin.hookimpl(lambda register: register("widen", Widen))
    try:
        plugins.load_plugins()
        plugins.register_plugin(module, plugins.PluginInfo("thirdparty", "advkit_thirdparty", "advkit-thirdparty", "1.2.3"))
        m = load_model("flat-net", num_classes=10, input_shape=(1, 28, 28))
        d = advkit.create_defense("widen")
        m.backbone = d.transform_model(m.backbone)
        path = save_checkpoint(m, tmp_path / "m", defenses=[d.recipe()])
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["plugins"]["backbone"] == {"name": "flat-net", "provider": "thirdparty", "package": "advkit-thirdparty",
                                               "version": "1.2.3", "qualified": "thirdparty.flat-net"}
        assert [x["package"] for x in meta["plugins"]["defenses"]] == ["advkit-thirdparty"]
        assert torch.equal(load_model(str(path))(torch.ones(1, 1, 28, 28)), m(torch.ones(1, 1, 28, 28)))
    finally:
        plugins.reset()
        plugins.load_plugins()
    with pytest.raises(UserError) as err:
        load_model(str(path))
    assert str(err.value) == (f"checkpoint {path} needs backbone 'flat-net' from the plugin package 'advkit-thirdparty' "
                              f"1.2.3 (pip install advkit-thirdparty), which is not loaded here")
    meta["arch"] = "smallcnn"
    meta["arch_params"] = {"width": 8}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"needs defense 'widen' from the plugin package 'advkit-thirdparty' 1.2.3"):
        load_model(str(path))


def test_checkpoint_of_a_user_model_says_how_to_load_it(tmp_path):
    m = load_model(f"{__name__}:make_flat", input_shape=(1, 28, 28))
    path = save_checkpoint(m, tmp_path / "m")
    with pytest.raises(UserError, match=rf"holds the user model '{__name__}:make_flat'.*--weights {path}"):
        load_model(str(path))
    m2 = load_model(f"{__name__}:make_flat", input_shape=(1, 28, 28), weights=str(path))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask):
    import os
    import stat

    from advkit._internal.files import atomic_write_json

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "report.json", {"a": 1})
        m = load_model("smallcnn:width=8", num_classes=10, input_shape=(1, 28, 28))
        path = save_checkpoint(m, tmp_path / "model")
    finally:
        os.umask(old)
    for f in (tmp_path / "report.json", path, path.with_suffix(".json")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
