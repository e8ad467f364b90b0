"""CSA's bank estimator: linearized frequency Shapley values, the bank-quality metric, the reference games, sharding."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advkit._internal.errors import UserError

GRID = (3, 3)  # 8 players on 8x8 images: exact enumeration is 256 coalitions
REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "csa" / "reference-smallcnn-fmnist.safetensors"
REFERENCE_ROWS = [0, 3, 6]  # the small-size check: three of the reference games (classes 0, 1, 3)


def linearized_by_enumeration(net, x, y, grid):
    """The trapezoid-linearized Shapley values, by enumerating all coalitions (an independent computation).

    ``phi_i = sum_{S not i} |S|!(P-1-|S|)!/P! * (dF/dz_i(S) + dF/dz_i(S + i)) / 2`` with
    ``dF/dz_i(S) = <grad v(clamp(x_S)), comp_i>``.
    """
    from advkit_csa.players import FrequencyPlayers

    players = FrequencyPlayers(tuple(x.shape[-2:]), grid)
    p = players.num_players
    codes = torch.arange(2**p)
    members = ((codes[:, None] >> torch.arange(p)) & 1).double()
    weight = torch.tensor([math.factorial(s) * math.factorial(p - 1 - s) / math.factorial(p) for s in range(p)], dtype=torch.float64)
    out = torch.zeros(x.shape[0], p, dtype=torch.float64)
    for n in range(x.shape[0]):
        comps, base = players.components(x[n : n + 1])
        flat = comps[0].flatten(1).double()
        images = (base.flatten().double() + members @ flat).float().view(-1, *x.shape[1:]).requires_grad_(True)
        v = torch.softmax(net(images.clamp(0, 1)), -1)[:, int(y[n])]
        grad = torch.autograd.grad(v.sum(), images)[0].flatten(1).double()
        slopes = grad @ flat.T  # (2^P, P)
        for i in range(p):
            without = codes[(codes >> i) & 1 == 0]
            size = members[without].sum(1).long()
            out[n, i] = (weight[size] * 0.5 * (slopes[without, i] + slopes[without | (1 << i), i])).sum()
    return out


def gradient(net, x, y, **kw):
    from advkit_csa.linearized import gradient_shapley

    kw.setdefault("grid", GRID)
    kw.setdefault("progress", False)
    return gradient_shapley(net, x, y, **kw)


# ----------------------------------------------------------------------------- the estimator


def test_gradient_estimator_converges_to_the_linearized_values(tiny):
    net, x, y, _ = tiny
    target = linearized_by_enumeration(net, x, y, GRID)
    r = gradient(net, x, y, pairs=2048, exact_share=None)
    z = (r.values.double() - target) / r.stderr.double().clamp_min(1e-9)
    assert z.abs().max() < 5, z
    assert z.pow(2).mean().sqrt() < 2  # standard errors are calibrated
    assert r.passes.tolist() == [2 + 2 * 2048 * 3] * 4  # a gradient counts as three forward passes


def test_exact_differences_are_unbiased_for_the_true_values(tiny):
    from advkit_csa.exact import exact_frequency_shapley

    net, x, y, _ = tiny
    exact = exact_frequency_shapley(net, x, y, grid=GRID)
    r = gradient(net, x, y, pairs=1024, exact_share=0.0)  # every player by exact differences
    z = (r.values - exact.values) / r.stderr.clamp_min(1e-9)
    assert z.abs().max() < 5, z
    assert z.pow(2).mean().sqrt() < 2
    assert torch.allclose(r.v_full, exact.v_full, atol=1e-5) and torch.allclose(r.v_empty, exact.v_empty, atol=1e-5)


def test_exact_players_are_the_energy_heavy_ones():
    from advkit_csa.linearized import exact_players

    energy = torch.tensor([1.0, 30.0, 5.0, 64.0])
    assert exact_players(energy, 0.1).tolist() == [1, 3]
    assert exact_players(energy, 1.0).tolist() == [3]  # always the largest
    assert exact_players(energy, None).tolist() == []


def test_gradient_estimator_is_deterministic_and_per_image(tiny):
    net, x, y, _ = tiny
    a = gradient(net, x, y, pairs=64, seed=7)
    b = gradient(net, x, y, pairs=64, seed=7)
    assert torch.equal(a.values, b.values) and not torch.equal(a.values, gradient(net, x, y, pairs=64, seed=8).values)
    alone = gradient(net, x[2:3], y[2:3], pairs=64, seed=7, indices=[2])
    assert torch.allclose(alone.values[0], a.values[2], atol=1e-7)


def test_sequential_stop(tiny):
    from advkit_csa.quality import expected_sign_loss

    net, x, y, _ = tiny
    r = gradient(net, x, y, pairs=512, target_loss=0.02, round_pairs=16)
    used = torch.tensor(r.timing["pairs"])
    assert (used < 512).any() and (used >= 32).all()
    stopped = used < 512
    assert (expected_sign_loss(r.values, r.stderr)[stopped] <= 0.02).all()


def test_gradient_estimator_settings_are_user_errors(tiny):
    net, x, y, _ = tiny
    for kw in (dict(pairs=1), dict(target_loss=2.0), dict(value="margin")):
        with pytest.raises(UserError):
            gradient(net, x, y, **kw)


# ----------------------------------------------------------------------------- the bank-quality metric


def test_bank_quality_against_a_direct_computation():
    from advkit_csa.bank import nfc_spectra
    from advkit_csa.players import FrequencyPlayers
    from advkit_csa.quality import bank_quality, player_energy

    players = FrequencyPlayers((8, 8), GRID)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=g)
    ref = torch.randn(3, 8, generator=g, dtype=torch.float64)
    est = ref.clone()
    est[0, [1, 4]] *= -1  # two wrong signs on the first image
    est[1, :] = -est[1, :].abs()  # everything negative on the second
    q = bank_quality(est, ref, player_energy(x, players))
    w = ref.abs()
    assert q["disagreement"][0] == pytest.approx(float((w[0, 1] + w[0, 4]) / w[0].sum()))
    assert q["disagreement"][2] == 0 and q["p_relerr"][2] == 0
    assert torch.allclose(q["agreement"], 1 - q["disagreement"])
    for n in range(3):  # ||p_est - p_ref|| / ||p_ref|| with the bank's own p_X
        p_est, p_ref = nfc_spectra(x[n : n + 1], est[n : n + 1], players), nfc_spectra(x[n : n + 1], ref[n : n + 1], players)
        direct = float(torch.linalg.vector_norm(p_est - p_ref) / torch.linalg.vector_norm(p_ref))
        assert q["p_relerr"][n] == pytest.approx(direct, rel=1e-5)


def test_reference_floor_and_expected_loss():
    from advkit_csa.quality import expected_sign_loss, reference_floor

    ref = torch.tensor([[0.5, -0.2, 0.0001]], dtype=torch.float64)
    se = torch.tensor([[0.01, 0.01, 0.01]], dtype=torch.float64)
    floor = reference_floor(ref, se, torch.ones(1, 3, dtype=torch.float64))
    # only the tiny player can flip (with probability ~1/2), carrying 0.0001 / 0.7001 of the weight
    assert float(floor["disagreement"][0]) == pytest.approx(0.0001 * 0.496 / 0.7001, rel=0.01)
    assert float(expected_sign_loss(ref, se)[0]) == pytest.approx(float(floor["disagreement"][0]))


# ----------------------------------------------------------------------------- the reference games


@pytest.fixture(scope="module")
def reference_games():
    from advkit_csa.quality import ReferenceGames

    ref = ReferenceGames.load(REFERENCE)
    assert len(ref) >= max(REFERENCE_ROWS) + 1
    return ref


def test_reference_games_are_the_bundled_model_and_data(reference_games):
    import advkit
    from advkit_csa.bank import model_fingerprint

    ref = reference_games
    assert ref.meta["model_fingerprint"] == model_fingerprint(advkit.load_model("smallcnn-fmnist"))
    data = advkit.load_dataset("fmnist-mini", "train")
    for row in REFERENCE_ROWS:
        image, label = data[int(ref.indices[row])]
        assert torch.equal(image.float(), ref.images[row]) and int(label) == int(ref.labels[row])
    gap = ref.values.sum(1) - (ref.v_full - ref.v_empty)
    assert gap.abs().max() < 1e-4  # the reference estimator is exactly efficient


def test_bank_estimator_reaches_the_bank_quality_on_reference_games(reference_games, single_thread):
    """The default bank estimator against the stored high-budget values, and plain sampling at the same passes."""
    import advkit
    from advkit_csa.bank import DEFAULT_PAIRS, DEFAULT_TARGET_LOSS
    from advkit_csa.linearized import gradient_shapley
    from advkit_csa.shapley import frequency_shapley

    ref = reference_games.subset(REFERENCE_ROWS)
    model = advkit.load_model("smallcnn-fmnist")
    ours = gradient_shapley(model, ref.images, ref.labels, pairs=DEFAULT_PAIRS, target_loss=DEFAULT_TARGET_LOSS, seed=1,
                            indices=ref.indices.tolist(), progress=False)
    q = ref.score(ours.values, ours.players)
    # the chosen bank quality is a mean disagreement of 0.005 over all 20 games (docs/csa.md); three games vary more
    assert float(q["disagreement"].mean()) <= 0.01 and float(q["disagreement"].max()) <= 0.02, q["disagreement"]
    perms = int(ours.passes.double().mean()) // (ours.players.num_players - 1)
    plain = frequency_shapley(model, ref.images, ref.labels, permutations=perms, antithetic=False, control_variate=False,
                              adaptive=False, seed=1, indices=ref.indices.tolist(), batch_size=256, progress=False)
    assert plain.passes.double().mean() <= ours.passes.double().mean()
    qp = ref.score(plain.values, plain.players)
    assert float(qp["disagreement"].mean()) > 3 * float(q["disagreement"].mean())


# ----------------------------------------------------------------------------- the bank with the gradient estimator


def build(net, data, out, **kw):
    from advkit_csa.bank import build_bank

    kw = {"per_class": 2, "pairs": 16, "grid": GRID, "chunk": 4, "progress": False, **kw}
    return build_bank(net, data, out=out, **kw)


def test_gradient_bank_holds_nfc_and_is_cached(tiny, tmp_path, counting):
    import json

    net, _, _, data = tiny
    first = counting(net)
    bank, path = build(first, data, tmp_path)
    assert bank.meta["settings"]["estimator"] == "gradient" and json.loads(path.with_suffix(".json").read_text())["images"] == 20
    assert int(bank.passes.sum()) == bank.meta["forward_passes"] > 0
    x, _ = data.tensors()
    src = x[bank.indices]
    mask = bank.values < 0
    from advkit_csa.bank import nfc_spectra
    from advkit_csa.players import FrequencyPlayers

    expect = nfc_spectra(src, bank.values, FrequencyPlayers((8, 8), GRID))
    assert torch.allclose(bank.spectra, expect, atol=1e-5) and mask.any() and (~mask).any()
    second = counting(net)
    again, path2 = build(second, data, tmp_path)
    assert second.calls == 0 and path2 == path and torch.equal(again.real, bank.real)
    assert build(counting(net), data, tmp_path, pairs=32)[1] != path  # other settings, other key


def test_gradient_bank_resumes_from_its_chunks(tiny, tmp_path, counting):
    net, _, _, data = tiny
    first = counting(net)
    bank, _ = build(first, data, tmp_path / "a")
    broken = counting(net, limit=first.calls // 2)
    with pytest.raises(RuntimeError, match="interrupted"):
        build(broken, data, tmp_path / "b")
    done = list((tmp_path / "b").glob("*.partial-*.safetensors"))
    assert 0 < len(done) < 5
    rest = counting(net)
    resumed, _ = build(rest, data, tmp_path / "b")
    assert broken.calls + rest.calls <= first.calls * (1 + 1 / 5)  # at most one chunk of five redone
    assert torch.equal(resumed.values, bank.values) and torch.equal(resumed.real, bank.real)
    assert not list((tmp_path / "b").glob("*.partial*"))


def test_bank_cost_is_said_before_the_build_and_brackets_it(tiny, tmp_path, capsys):
    import re

    net, _, _, data = tiny
    bank, _ = build(net, data, tmp_path, pairs=96, target_loss=0.01, progress=True)
    line = next(ln for ln in capsys.readouterr().err.splitlines() if "csa bank:" in ln)
    assert "20 images to compute" in line and "64 to 96 pairs per image, the stop rule decides" in line, line
    lo, hi = (float(v) * 1e6 for v in re.search(r"([\d.]+) to ([\d.]+) M forward passes", line).groups())
    assert lo - 5e3 <= bank.meta["forward_passes"] <= hi + 5e3  # the line rounds to 10,000 passes
    assert re.search(r"about \d+ (s|min)", line)
    rebuilt, _ = build(net, data, tmp_path, pairs=96, target_loss=0.01, progress=True)  # found: nothing to announce
    assert "csa bank:" not in capsys.readouterr().err


def test_bank_cost_counts_every_pass_of_the_estimators():
    from advkit_csa.bank import estimator_settings
    from advkit_csa.cost import bank_cost
    from advkit_csa.players import FrequencyPlayers

    players = FrequencyPlayers((8, 8), GRID)  # 8 players
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    perm = estimator_settings("permutation", players=players, pairs=0, target_loss=None, permutations=10, target_se=None,
                              value="prob", per_class=1, seed=0)
    assert bank_cost(net, x, y, 30, perm, players, 16)["passes"] == (30 * (2 + 10 * 7),) * 2
    grad = estimator_settings("gradient", players=players, pairs=100, target_loss=None, permutations=0, target_se=None,
                              value="prob", per_class=1, seed=0)
    grad["exact_share"] = 1.0  # only the energy-heaviest player gets exact differences
    assert bank_cost(net, x, y, 30, grad, players, 16)["passes"] == (30 * (2 + 100 * 2 * (3 + 1)),) * 2


def _env():
    import advkit
    import advkit_csa

    paths = [str(Path(m.__file__).resolve().parent.parent) for m in (advkit, advkit_csa)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_torchrun_two_processes_build_the_same_bank(tmp_path):
    args = ["-m", "advkit", "--seed", "0", "-q", "--device", "cpu", "csa-bank", "--per-class", "2", "--pairs", "4",
            "--grid", "4", "--chunk", "4"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args,
                          "--out", str(tmp_path / "two")], env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count("csa-bank:") == 1  # only rank 0 reports
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(files) == 2 and files == sorted(p.name for p in (tmp_path / "two").iterdir())  # the bank, no partials
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_explainer_offers_the_gradient_estimator(tiny):
    from advkit._internal.explanation.engine import explain

    net, x, y, _ = tiny
    e = explain(net, x, y, "freq-shapley", estimator="gradient", pairs=32, grid="3x3", progress=False)
    assert e.maps.shape == (4, 1, 8, 8) and e.images.shape == e.extras["NFC"].shape == (4, 1, 8, 8)
    assert e.meta["settings"]["estimator"] == "gradient" and e.meta["forward_passes"] > 0
    with pytest.raises(UserError):
        explain(net, x, y, "freq-shapley", estimator="kernel")


@pytest.mark.slow
def test_bank_killed_in_each_write_resumes_to_the_same_file(tmp_path, kill_at, advkit_cli):
    args = ["--seed", "0", "-q", "csa-bank", "--per-class", "2", "--pairs", "4", "--grid", "4", "--chunk", "8"]
    advkit_cli([*args, "--out", tmp_path / "ref"])
    files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert len(files) == 2  # the bank and its sidecar, no partial files
    k = 0
    while kill_at(k := k + 1, [*args, "--out", tmp_path / f"kill{k}"]):
        advkit_cli([*args, "--out", tmp_path / f"kill{k}"])
        for name in files:
            assert (tmp_path / f"kill{k}" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), (k, name)
        assert not list((tmp_path / f"kill{k}").glob("nfc-bank-*.partial-*"))
    assert k - 1 >= 5  # 3 chunks, the bank, its sidecar


def test_bad_bank_paths_and_files_are_one_line_errors(tiny, tmp_path):
    from advkit_csa.bank import NFCBank

    with pytest.raises(UserError, match="no NFC bank at .*advkit csa-bank"):
        NFCBank.load(tmp_path / "missing")
    with pytest.raises(UserError, match="holds no bank"):
        NFCBank.load(tmp_path)
    net, _, _, data = tiny
    _, path = build(net, data, tmp_path / "b")
    path.with_suffix(".json").write_text("not json {")
    with pytest.raises(UserError, match="is not an NFC bank"):
        NFCBank.load(path)
    (tmp_path / "b" / "nfc-bank-0000000000000000.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="2 banks"):
        NFCBank.load(tmp_path / "b")


def test_bad_bank_settings_and_outputs_are_refused_before_any_work(tiny, tmp_path, capsys):
    net, _, _, data = tiny
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write the NFC bank into"):
        build(net, data, tmp_path / "file" / "bank", progress=True)
    with pytest.raises(UserError, match="pairs must be >= 2"):
        build(net, data, tmp_path / "b", pairs=1, progress=True)
    with pytest.raises(UserError, match="permutations must be >= 1"):
        build(net, data, tmp_path / "b", estimator="permutation", permutations=0, progress=True)
    assert "csa bank:" not in capsys.readouterr().err  # no cost announced for a build that cannot run
