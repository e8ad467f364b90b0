"""``--save-adv``: the saved adversarial examples are the attack's, inside the budget, with the model's predictions."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from advkit._internal.checkpoint import load_tensors
from advkit._internal.cli import cli
from advkit._internal.models import load_model


def test_save_adv_writes_verified_examples_and_a_picture(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["-q", "eval", "-a", "fgsm,pgd:steps=3", "-n", "12", "--save-adv", "5",
                                 "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    model = load_model("smallcnn-fmnist")
    from advkit._internal.data import load_dataset

    x, y = load_dataset("fmnist-mini", "test", n=12).tensors()
    for stem in ("cascade_0_fgsm", "cascade_1_pgd"):
        t = load_tensors(out / "adv" / f"{stem}.safetensors")
        n = t["index"].numel()
        assert 0 < n <= 5 and t["adv"].shape == (n, 1, 28, 28)
        idx = t["index"].long()
        assert torch.equal(t["clean"], x[idx]) and torch.equal(t["label"], y[idx])
        assert (t["adv"] - t["clean"]).abs().max() <= 0.1 + 1e-5  # the default eps of the data
        with torch.inference_mode():
            assert torch.equal(model(t["adv"]).argmax(1), t["pred"])
        w, h = Image.open(out / "adv" / f"{stem}.png").size
        assert w > 100 * n / 2 and h > 300  # one column per example, three rows
    # fgsm attacked the clean-correct points in order: its examples are the first of them
    fgsm = load_tensors(out / "adv" / "cascade_0_fgsm.safetensors")
    with torch.inference_mode():
        correct = (model(x).argmax(1) == y).nonzero().flatten()
    assert fgsm["index"].tolist() == correct[:5].tolist()


def test_save_adv_needs_an_output_directory():
    import advkit

    m = load_model("smallcnn-fmnist")
    data = advkit.load_dataset("fmnist-mini", "test", n=4)
    with pytest.raises(advkit.UserError, match="save_adv needs an output directory"):
        advkit.evaluate(m, data, ["fgsm"], save_adv=2, quiet=True)
