"""CSA: the frequency Shapley estimator, the NFC bank, the csa defense and its explainer."""

from __future__ import annotations

import contextlib

import pytest
import torch

from advkit._internal.errors import UserError

GRID = (3, 3)  # 8 players on 8x8 images: exact enumeration is 256 coalitions


@contextlib.contextmanager
def one_thread():
    """Tiny models run faster on one thread than on two busy ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def exact(tiny):
    from advkit_csa.exact import exact_frequency_shapley

    net, x, y, _ = tiny
    with one_thread():
        return exact_frequency_shapley(net, x, y, grid=GRID)


def estimate(net, x, y, **kw):
    from advkit_csa.shapley import frequency_shapley

    kw.setdefault("grid", GRID)
    kw.setdefault("progress", False)
    with one_thread():
        return frequency_shapley(net, x, y, **kw)


# ----------------------------------------------------------------------------- players


def test_players_partition_the_spectrum_and_keep_dc():
    from advkit_csa.players import FrequencyPlayers

    for size, grid, p in (((32, 32), None, 255), ((28, 28), None, 195), ((8, 8), (3, 3), 8)):
        pl = FrequencyPlayers(size, grid)
        assert pl.num_players == p
        masks = pl.masks
        assert masks.sum(0).eq(1).all()  # every frequency in exactly one cell
        assert masks[-1][0, 0]  # the DC component (unshifted (0, 0)) is in the kept centre cell
    x = torch.rand(2, 3, 8, 8)
    comps, base = FrequencyPlayers((8, 8), (3, 3)).components(x)
    assert torch.allclose(base + comps.sum(1), x, atol=1e-5)


# ----------------------------------------------------------------------------- estimator


def test_estimate_converges_to_exact(tiny, exact):
    net, x, y, _ = tiny
    r = estimate(net, x, y, permutations=200)
    err = r.values - exact.values
    assert (err.abs() <= 5 * r.stderr + 1e-6).all(), (err / r.stderr).abs().max()
    assert (err / r.stderr).pow(2).mean().sqrt() < 2.0  # standard errors are calibrated
    assert torch.allclose(r.v_full, exact.v_full, atol=1e-5) and torch.allclose(r.v_empty, exact.v_empty, atol=1e-5)
    more = estimate(net, x, y, permutations=800)
    assert (more.values - exact.values).abs().mean() < err.abs().mean()


@pytest.mark.parametrize("kw", [
    dict(antithetic=False, control_variate=False),
    dict(antithetic=True, control_variate=False),
    dict(antithetic=True, control_variate=True),
    dict(value="logit"),
    dict(permutations=64, target_se=0.05),
    dict(permutations=3),
])
def test_every_estimate_is_efficient(tiny, kw):
    net, x, y, _ = tiny
    r = estimate(net, x, y, **{"permutations": 24, **kw})
    assert r.efficiency_gap().abs().max() < 1e-5
    assert r.values.shape == (4, 8) and r.stderr.shape == (4, 8)


def test_exact_is_efficient(exact):
    assert exact.efficiency_gap().abs().max() < 1e-6


def test_exact_matches_the_definition_over_every_order(tiny, exact):
    """The game written out from the paper's definition with numpy's FFT, averaged over all 8! orders."""
    import itertools

    import numpy as np

    net, x, y, _ = tiny
    h = w = 8
    gh, gw = GRID
    cell = (np.arange(h)[:, None] * gh // h) * gw + (np.arange(w)[None, :] * gw // w)  # centred layout
    centre = cell[h // 2, w // 2]
    players = [c for c in range(gh * gw) if c != centre]
    for n in range(2):
        spec = np.fft.fftshift(np.fft.fft2(x[n, 0].double().numpy()))
        cache = {}

        def v(coalition):
            key = frozenset(coalition)
            if key not in cache:
                keep = np.isin(cell, [centre, *key])
                img = np.clip(np.fft.ifft2(np.fft.ifftshift(spec * keep)).real, 0, 1)
                with torch.no_grad():
                    logits = net(torch.tensor(img, dtype=torch.float32)[None, None])
                cache[key] = float(torch.softmax(logits.double(), 1)[0, y[n]])
            return cache[key]

        phi = np.zeros(len(players))
        orders = list(itertools.permutations(range(len(players))))
        for order in orders:
            before = []
            for k in order:
                phi[k] += v([players[j] for j in before + [k]]) - v([players[j] for j in before])
                before.append(k)
        phi /= len(orders)
        assert np.allclose(exact.values[n].double().numpy(), phi, atol=2e-5), (exact.values[n], phi)
        assert abs(float(exact.v_empty[n]) - v([])) < 1e-5


def test_antithetic_and_control_variate_beat_plain_sampling(tiny, exact):
    net, x, y, _ = tiny
    mse = {}
    for name, kw in (("plain", dict(antithetic=False, control_variate=False)),
                     ("antithetic", dict(antithetic=True, control_variate=False)),
                     ("ours", dict(antithetic=True, control_variate=True))):
        r = estimate(net, x, y, permutations=160, seed=3, **kw)
        mse[name] = float((r.values - exact.values).pow(2).mean())
        budget = 2 + 160 * 7
        assert 0.97 * budget <= int(r.passes.max()) <= 1.01 * budget  # the same forward passes, up to rounding
    assert mse["antithetic"] < mse["plain"] / 2, mse
    assert mse["ours"] < mse["plain"] / 2, mse


def test_deterministic_under_a_seed_and_independent_of_the_batch(tiny):
    net, x, y, _ = tiny
    a = estimate(net, x, y, permutations=16, seed=7)
    b = estimate(net, x, y, permutations=16, seed=7)
    c = estimate(net, x, y, permutations=16, seed=8)
    assert torch.equal(a.values, b.values) and torch.equal(a.stderr, b.stderr)
    assert not torch.equal(a.values, c.values)
    alone = estimate(net, x[2:3], y[2:3], permutations=16, seed=7, indices=[2])
    assert torch.allclose(alone.values[0], a.values[2], atol=1e-6)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(estimate(net, x, y, permutations=8, generator=g1).values,
                       estimate(net, x, y, permutations=8, generator=g2).values)


def test_target_se_stops_early(tiny):
    net, x, y, _ = tiny
    r = estimate(net, x, y, permutations=400, target_se=0.02, round_permutations=16)
    assert (r.permutations < 400).all()
    assert (r.stderr.max(1).values <= 0.02).all()


def test_bad_settings_are_user_errors(tiny):
    net, x, y, _ = tiny
    with pytest.raises(UserError):
        estimate(net, x, y, value="margin")
    with pytest.raises(UserError):
        estimate(net, x, y, permutations=0)
    from advkit_csa.exact import exact_frequency_shapley

    with pytest.raises(UserError):
        exact_frequency_shapley(net, x, y, grid=(8, 8))


# ----------------------------------------------------------------------------- bank


def build(net, data, out, **kw):
    from advkit_csa.bank import build_bank

    kw = {"per_class": 2, "estimator": "permutation", "permutations": 16, "grid": GRID, "chunk": 4, "progress": False, **kw}
    with one_thread():
        return build_bank(net, data, out=out, **kw)


def test_bank_by_class_holds_nfc_of_that_class(tiny, tmp_path, counting):
    net, _, _, data = tiny
    bank, path = build(counting(net), data, tmp_path)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert len(bank.labels) == 20
    x, y = data.tensors()
    for c in range(10):
        spectra = bank.for_class(c)
        assert spectra.shape == (2, 1, 8, 8)
        rows = (bank.labels == c).nonzero().flatten()
        for k, row in enumerate(rows):
            src = int(bank.indices[row])
            assert int(y[src]) == c  # the spectrum comes from an image of class c
            full = torch.fft.fft2(x[src])
            p = spectra[k]
            kept = p.abs() > 0
            assert torch.allclose(p[kept], full[kept], atol=1e-4)  # p = 1[phi < 0] * F(X)
            assert p[..., 0, 0].abs().max() == 0  # the DC component is never in the bank
    from advkit_csa.bank import NFCBank

    again = NFCBank.load(tmp_path)  # a directory with one bank
    assert torch.equal(again.real, bank.real) and torch.equal(again.labels, bank.labels)


def test_bank_is_cached_and_resumes(tiny, tmp_path, counting):
    net, _, _, data = tiny
    first = counting(net)
    bank, path = build(first, data, tmp_path / "a")
    assert first.calls > 0
    second = counting(net)
    again, path2 = build(second, data, tmp_path / "a")
    assert second.calls == 0 and path2 == path and torch.equal(again.real, bank.real)

    broken = counting(net, limit=first.calls // 2)
    with pytest.raises(RuntimeError, match="interrupted"):
        build(broken, data, tmp_path / "b")
    assert list((tmp_path / "b").glob("*.partial-*.safetensors"))  # one file per finished chunk
    rest = counting(net)
    resumed, _ = build(rest, data, tmp_path / "b")
    assert 0 < rest.calls < first.calls
    assert broken.calls + rest.calls <= first.calls + 4 * (2 + 16 * 7)  # at most one chunk redone
    assert torch.allclose(resumed.values, bank.values, atol=1e-5)
    assert torch.allclose(resumed.real, bank.real, atol=1e-5)
    assert not list((tmp_path / "b").glob("*.partial*"))

    other, path3 = build(counting(net), data, tmp_path / "a", permutations=18)  # other settings, other key
    assert path3 != path


# ----------------------------------------------------------------------------- defense


def test_csa_transform(tiny, tmp_path):
    from advkit._internal.defense import TrainContext, create_defense

    net, _, _, data = tiny
    _, path = build(net, data, tmp_path)
    d = create_defense(f"csa:bank={path},alpha=0.5")
    assert d.points == ("data",)
    ctx = TrainContext(threat=None, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    d.setup(None, data, ctx)
    x, y = data.tensors()
    x, y = x[:32], y[:32]
    x2, y2 = d.transform_batch(x.clone(), y, ctx)
    assert x2.shape == x.shape and x2.dtype == x.dtype and torch.equal(y2, y)
    assert x2.min() >= 0 and x2.max() <= 1 and not x2.is_complex()
    assert (x2 - x).abs().amax(dim=(1, 2, 3)).gt(1e-3).float().mean() > 0.5  # some entries have no NFC at all
    picks = d.sample(y, torch.Generator().manual_seed(0))
    assert torch.equal(d.bank.labels[torch.argsort(d.bank.labels, stable=True)][picks], y)  # same class
    nfc = torch.fft.ifft2(d.bank.spectra[torch.argsort(d.bank.labels, stable=True)][picks]).real
    assert torch.allclose(x2, (x + 0.5 * nfc).clamp(0, 1), atol=1e-6)  # real(IFFT(F(X) + alpha p)), clamped
    lin = create_defense(f"csa:bank={path},alpha=0.8,schedule=linear")
    assert lin.alpha_at(0, 4) == pytest.approx(0.2) and lin.alpha_at(3, 4) == pytest.approx(0.8)


def test_csa_needs_a_pretrained_model_or_a_bank(tiny):
    from advkit._internal.defense import TrainContext, create_defense

    _, _, _, data = tiny
    d = create_defense("csa")
    with pytest.raises(UserError, match="pretrained"):
        d.setup(None, data, TrainContext(threat=None, device=torch.device("cpu")))
    with pytest.raises(UserError):
        create_defense("csa:schedule=cosine")


def test_csa_with_pgd_at_trains(tmp_path):
    import json

    from advkit import train
    from advkit._internal.data import load_dataset
    from advkit._internal.plugins import registry

    if "pgd-at" not in registry("defense"):
        pytest.skip("the pgd-at defense is not installed")
    data = load_dataset("fmnist-mini", "train", n=100)
    with one_thread():
        result = train("smallcnn:width=16", data, defenses=["pgd-at:steps=1", "csa:alpha=0.5,grid=2,per_class=2,pairs=4"],
                       epochs=1, batch_size=50, val_attack="none", out=tmp_path, quiet=True)
    assert len(result.history) == 1 and result.history[0]["train_loss"] == result.history[0]["train_loss"]
    banks = list((tmp_path / "cache").glob("nfc-bank-*.json"))
    assert len(banks) == 1 and json.loads(banks[0].read_text())["settings"]["estimator"] == "gradient"  # the fast bank
    assert [r["name"] for r in result.model.info["defenses"]] == ["pgd-at", "csa"]


# ----------------------------------------------------------------------------- explainer and command


def test_freq_shapley_explainer(tiny, tmp_path):
    from advkit._internal.explanation.engine import explain, figure

    net, x, y, _ = tiny
    with one_thread():
        e = explain(net, x, y, "freq-shapley", permutations=16, grid="3x3", progress=False,
                           figure=str(tmp_path / "csa.png"))
    assert e.maps.shape == (4, 1, 8, 8) and e.images.shape == e.extras["NFC"].shape == (4, 1, 8, 8)
    assert e.images.min() >= 0 and e.images.max() <= 1 and e.meta["maps_space"] == "spectrum"
    assert set(e.scores) >= {"max_se", "v_all", "v_none", "v_pfc", "v_nfc"}
    assert e.scores["efficiency_gap"].abs().max() < 1e-5
    assert (tmp_path / "csa.png").stat().st_size > 0
    assert figure([("tiny", e)])[:4] == b"\x89PNG"


def test_csa_bank_command(tmp_path, capsys):
    from advkit._internal.cli import main

    with one_thread(), pytest.raises(SystemExit) as exit_:
        main(["-q", "csa-bank", "--model", "smallcnn-fmnist", "--dataset", "fmnist-mini", "--per-class", "1",
              "--pairs", "4", "--grid", "2", "--out", str(tmp_path)])
    assert exit_.value.code == 0
    assert "csa:bank=" in capsys.readouterr().out
    assert len(list(tmp_path.glob("nfc-bank-*.safetensors"))) == 1


def test_csa_bank_draws_from_the_first_n_images(tmp_path, capsys):
    from advkit._internal.cli import main
    from advkit_csa.bank import NFCBank

    with one_thread(), pytest.raises(SystemExit) as exit_:
        main(["-q", "csa-bank", "--model", "smallcnn-fmnist", "-n", "300", "--per-class", "3", "--pairs", "4",
              "--grid", "2", "--out", str(tmp_path)])
    assert exit_.value.code == 0
    bank = NFCBank.load(tmp_path)
    assert len(bank.indices) == 30 and int(bank.indices.max()) < 300  # the images a run with --n-train 300 sees
