"""The GPU path of the training engine, checked on the CPU: autocast, channels_last, file-backed data.

bf16 autocast runs on the CPU, so its placement (update in bf16, adversary and
validation in fp32) and its step are compared here with a hand-written step
under ``torch.autocast``; fp16 (CUDA only) must be refused with one line.
"""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from advkit._internal.checkpoint import load_tensors
from advkit._internal.cli import cli
from advkit._internal.data import DataInfo, ImageData, TensorImages, load_dataset
from advkit._internal.errors import UserError
from advkit._internal.models import load_model
from advkit._internal.threat import ThreatModel
from advkit._internal.training.batching import epoch_batches, in_memory
from advkit._internal.training.precision import Precision
from advkit._internal.training.trainer import loader_workers, train

LINF = ThreatModel.parse("Linf", "0.1")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=32)


def smallcnn(seed: int = 0, shape=(1, 28, 28), classes: int = 10):
    torch.manual_seed(seed)
    c = shape[0]
    return load_model("smallcnn:width=8", num_classes=classes, input_shape=shape, mean=(0.5,) * c, std=(0.25,) * c)


def conv_dtypes(model):
    """A hook on the first conv recording ``(training mode, output dtype, input is channels_last)``."""
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def hook(module, inputs, output):
        seen.append((module.training, output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    conv.register_forward_hook(hook)
    return seen


def hand_step(model, data, amp: bool):
    """One SGD step on the engine's first batch, written by hand (with or without bf16 autocast)."""
    x, y = data.tensors()
    idx = epoch_batches(len(data), 32, seed=0, epoch=0)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.float().backward()
    opt.step()
    return float(loss.detach()), model


def test_bf16_step_is_the_autocast_step(data):
    """The engine's bf16 update equals a hand step under torch.autocast, and differs from the fp32 step."""
    model = smallcnn()
    ref_amp, ref_fp32 = copy.deepcopy(model), copy.deepcopy(model)
    result = train(model, data, epochs=1, batch_size=32, augment=False, val_attack="none", threat=LINF,
                   amp="bf16", quiet=True, optimizer="sgd", lr=0.1, weight_decay=5e-4)  # as hand_step
    loss_amp, ref_amp = hand_step(ref_amp, data, amp=True)
    loss_fp32, ref_fp32 = hand_step(ref_fp32, data, amp=False)
    rec = result.history[0]
    assert rec["train_loss"] == pytest.approx(loss_amp, rel=1e-5)
    assert loss_amp != loss_fp32
    got, want_amp, want_fp32 = (torch.cat([p.detach().flatten() for p in m.parameters()])
                                for m in (result.model, ref_amp, ref_fp32))
    assert (got - want_amp).abs().max() < 1e-6 and (got - want_fp32).abs().max() > 1e-4  # bf16 really ran
    assert (rec["precision"], rec["adversary_precision"], rec["memory_format"]) == ("bf16", "fp32", "contiguous")


@pytest.mark.parametrize("amp_adversary", [False, True])
def test_bf16_training_run_places_autocast_and_keeps_fp32_files(tmp_path, data, amp_adversary):
    model = smallcnn()
    seen = conv_dtypes(model)
    val = load_dataset("fmnist-mini", "test", n=16)
    result = train(model, data, defenses=["pgd-at:steps=1"], epochs=1, batch_size=16, lr=1e-3, optimizer="adam",
                   threat=LINF, val_data=val, val_attack="fgsm", amp="bf16", amp_adversary=amp_adversary,
                   out=tmp_path, quiet=True)
    rec = result.history[0]
    assert torch.isfinite(torch.tensor(rec["train_loss"])) and rec["val_robust"] is not None
    # the model's output check, 2 steps of adversary (eval mode) then update (train mode), validation (fp32)
    adv = torch.bfloat16 if amp_adversary else torch.float32
    assert [(t, d) for t, d, _ in seen[1:5]] == [(False, adv), (True, torch.bfloat16)] * 2
    assert seen[0][1] == torch.float32 and len(seen) > 5 and {d for _, d, _ in seen[5:]} == {torch.float32}
    assert rec["adversary_precision"] == ("bf16" if amp_adversary else "fp32") and rec["precision"] == "bf16"
    for name in ("last", "best"):
        tensors = load_tensors(tmp_path / f"{name}.safetensors")
        assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float32}
    row = next(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert (row["precision"], row["memory_format"]) == ("bf16", "contiguous")
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["settings"]["amp"] == "bf16" and state["settings"]["amp_adversary"] is amp_adversary
    assert json.loads((tmp_path / "last.json").read_text())["metrics"]["precision"] == "bf16"


def test_resume_refuses_another_precision(tmp_path, data):
    train(smallcnn(), data, epochs=1, batch_size=32, val_attack="none", threat=LINF, amp="bf16", out=tmp_path,
          quiet=True)
    with pytest.raises(UserError, match=r"other settings \(amp\)"):
        train(smallcnn(), data, epochs=1, batch_size=32, val_attack="none", threat=LINF, out=tmp_path, resume=True,
              quiet=True)


def test_fp16_on_cpu_and_bad_amp_are_refused_with_one_line(data, tmp_path):
    with pytest.raises(UserError, match=r"--amp fp16 needs a CUDA device.*use --amp bf16"):
        train(smallcnn(), data, epochs=1, amp="fp16", device="cpu", quiet=True)
    with pytest.raises(UserError, match=r"did you mean 'bf16'"):
        train(smallcnn(), data, epochs=1, amp="bf61", quiet=True)
    with pytest.raises(UserError, match=r"--amp-adversary .* pass --amp bf16"):
        train(smallcnn(), data, epochs=1, amp_adversary=True, quiet=True)
    r = CliRunner().invoke(cli, ["--device", "cpu", "-q", "train", "--amp", "fp16", "--n-train", "32", "--n-val", "0",
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        "advkit: error: --amp fp16 needs a CUDA device (fp16 training needs CUDA's gradient scaler); "
        "on cpu use --amp bf16 or --amp off"]


def test_channels_last_default_follows_the_device():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert Precision("off", False, None, cuda, (3, 32, 32)).channels_last  # no GPU touched for amp off
    assert not Precision("off", False, None, cuda, (10,)).channels_last
    assert not Precision("off", False, None, cpu, (3, 32, 32)).channels_last
    assert Precision("off", False, True, cpu, (3, 32, 32)).memory_format == "channels_last"
    with pytest.raises(UserError, match="needs image inputs"):
        Precision("off", False, True, cpu, (10,))


def test_channels_last_applies_and_matches_contiguous(tmp_path, data):
    runs = {}
    for flag in (True, False):
        model = smallcnn()
        seen = conv_dtypes(model)
        result = train(model, data, epochs=1, batch_size=32, augment=False, val_attack="none", threat=LINF,
                       channels_last=flag, out=tmp_path / str(flag), quiet=True)
        runs[flag] = result, seen
    (cl, seen_cl), (plain, _) = runs[True], runs[False]
    convs = [m.weight for m in cl.model.modules() if isinstance(m, torch.nn.Conv2d)][1:]  # in_channels > 1
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    assert all(m.weight.is_contiguous() for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert seen_cl[0][2] and cl.history[0]["memory_format"] == "channels_last"
    assert plain.history[0]["memory_format"] == "contiguous"
    assert cl.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], rel=1e-5)
    for (k, a), b in zip(cl.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
    saved = load_tensors(tmp_path / "True" / "last.safetensors")
    assert all(v.is_contiguous() for v in saved.values())


def write_folder(root, n_per_class: int = 8, size: int = 16):
    """A tiny image folder in torchvision's layout: ROOT/<split>/<class>/*.png, seeded RGB noise."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n_per_class):
                img = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8)
                img[: size // 2, :, c] = 255  # a class cue
                Image.fromarray(img.numpy()).save(folder / f"{i}.png")


def test_file_dataset_trains_through_the_dataloader_like_in_memory(tmp_path, monkeypatch):
    write_folder(tmp_path / "imgs")
    spec = f"imagefolder:root={tmp_path / 'imgs'},workers=1"
    files, val = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert in_memory(files) is None and loader_workers(files, world=1) <= 1
    loaders, reads = [], []
    real = torch.utils.data.DataLoader

    class Spy(real):
        def __init__(self, *args, **kwargs):
            loaders.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    val_tensors = val.tensors
    monkeypatch.setattr(val, "tensors", lambda: reads.append(1) or val_tensors())
    kw = dict(epochs=2, batch_size=6, lr=0.05, threat=LINF, val_attack="none", quiet=True)
    by_file = train(smallcnn(shape=(3, 16, 16), classes=2), files, val_data=val, **kw)
    train_loaders = [k for k in loaders if "batch_sampler" in k]
    (made,) = train_loaders  # one loader for the run, its workers kept across epochs, no pinning on the CPU
    assert made["num_workers"] == loader_workers(files, world=1)
    assert made["persistent_workers"] == (made["num_workers"] > 0) and made["pin_memory"] is False
    assert reads == [1]  # validation data read once through the dataset's own tensors()
    x, y = files.tensors()
    memory = ImageData(TensorImages(x, y), DataInfo("mem", 2, (3, 16, 16), (0.5,) * 3, (0.25,) * 3))
    by_memory = train(smallcnn(shape=(3, 16, 16), classes=2), memory, val_data=val, **kw)
    assert [h["train_loss"] for h in by_file.history] == pytest.approx([h["train_loss"] for h in by_memory.history],
                                                                       rel=1e-6)
    for a, b in zip(by_file.model.state_dict().values(), by_memory.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
