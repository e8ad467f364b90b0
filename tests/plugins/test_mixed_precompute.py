"""Mixed-batch training with precomputed examples (the fine-tuning recipe) and per-source budgets."""

from __future__ import annotations

import pytest
import torch

from advkit._internal.attack import create_attack
from advkit._internal.data import load_dataset
from advkit._internal.defense import TrainContext, create_defense
from advkit._internal.errors import UserError
from advkit._internal.models import load_model
from advkit._internal.threat import ThreatModel
from advkit._internal.training.trainer import train

LINF = ThreatModel.parse("Linf", "0.1")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini", "train", n=40)


def smallcnn(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), mean=(0.286,), std=(0.353,)).eval()


def ctx(index=None, augmentation=None, seed=0):
    c = TrainContext(threat=LINF, device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                     index=index, quiet=True)
    if augmentation is not None:
        c.state["augmentation"] = augmentation
    return c


def fgsm_reference(model, x, y, eps):
    """FGSM computed here, independently of the attack plugins: x + eps * sign(grad CE), clipped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def test_precomputed_examples_are_made_once_and_read_by_dataset_index(data):
    model = smallcnn()
    mixed = create_defense("mixed:fgsm=1,precompute=true")
    mixed.setup(model, data, ctx())
    mixed.on_epoch_start(model, data, ctx())
    x_all, y_all = data.tensors()
    expected = fgsm_reference(model, x_all, y_all, 0.1)
    assert torch.allclose(mixed.examples["fgsm"], expected - x_all, atol=1e-5)

    with torch.no_grad():  # training moves the weights: the stored examples stay those of the starting weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    index = torch.tensor([7, 3, 31, 0])
    x_adv = mixed.perturb(model, x_all[index], y_all[index], ctx(index))
    assert torch.allclose(x_adv, expected[index], atol=1e-5)
    mixed.on_epoch_start(model, data, ctx())  # not recomputed
    assert torch.allclose(mixed.examples["fgsm"], expected - x_all, atol=1e-5)


def test_precomputed_examples_follow_the_batch_flip(data):
    model = smallcnn()
    mixed = create_defense("mixed:fgsm=1,precompute=true")
    mixed.on_epoch_start(model, data, ctx())
    x_all, y_all = data.tensors()
    index = torch.tensor([2, 5])
    flip = lambda t: t.flip(-1)  # noqa: E731  (the engine's augmentation function: the same move on any tensor)
    x_adv = mixed.perturb(model, flip(x_all[index]), y_all[index], ctx(index, flip))
    assert torch.allclose(x_adv, flip(fgsm_reference(model, x_all[index], y_all[index], 0.1)), atol=1e-5)


def test_the_stored_examples_survive_a_resume(data):
    model = smallcnn()
    first = create_defense("mixed:fgsm=1,precompute=true")
    first.on_epoch_start(model, data, ctx())
    again = create_defense("mixed:fgsm=1,precompute=true")
    again.load_state_dict(first.state_dict())
    assert torch.equal(again.examples["fgsm"], first.examples["fgsm"])


def test_a_source_budget_of_its_own(data):
    model = smallcnn()
    x, y = data.tensors()
    mixed = create_defense("mixed:clean=0.5,fgsm=0.5,fgsm.budget=0.04")
    mixed.setup(model, data, ctx())
    c = ctx()
    x_adv = mixed.perturb(model, x, y, c)
    sel = c.state["mixed"]["source"] == 1
    assert torch.allclose(x_adv[sel], fgsm_reference(model, x[sel], y[sel], 0.04), atol=1e-5)
    assert float((x_adv - x).abs().max()) <= 0.04 + 1e-6
    assert create_attack("fgsm", model, LINF)  # the attack itself stays at the training budget elsewhere
    with pytest.raises(UserError, match="above the training budget"):
        create_defense("mixed:fgsm=1,fgsm.budget=0.2").setup(model, data, ctx())
    with pytest.raises(UserError, match="budget"):
        create_defense("mixed:fgsm=1,fgsm.budget=0")


def test_training_with_precomputed_examples(tmp_path, data):
    r = train("smallcnn", data, defenses=["mixed:clean=0.5,fgsm=0.5,precompute=true"], epochs=2, batch_size=16,
              optimizer="adam", lr=1e-3, n_val=0, val_attack="none", quiet=True, out=str(tmp_path / "run"))
    notes = " ".join(n for h in r.history for n in (h.get("notes") or []))
    assert "precomputing the fgsm example of each of 40 training images" in notes


def test_the_precompute_bar_moves_within_an_attack_call(data):
    """One attack call is one unit of the bar; it advances inside the call as the attack's passes are spent."""
    from advkit_training.precomputed import Moving

    class Bar:
        def __init__(self):
            self.steps = []

        def update(self, d):
            self.steps.append(d)

    model = smallcnn()
    x, y = data.tensors()
    bar, atk = Bar(), create_attack("pgd:steps=10", model, LINF)
    with Moving(bar, atk, len(x[:16])):
        atk(x[:16], y[:16])
    inside = bar.steps[:-1]  # the last step completes the unit
    assert len(inside) >= 5 and all(d > 0 for d in bar.steps)  # moved several times during the 10 steps
    assert 0.5 < sum(inside) < 1 and sum(bar.steps) == pytest.approx(1.0)
    assert not atk.counter.listeners  # the listener is removed after the call
