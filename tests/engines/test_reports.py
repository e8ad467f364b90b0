"""report.md / report.json / per_class.png of one run, and ``advkit report`` comparing runs.

Expected numbers are worked out by hand here from the per-sample records; the Wilson interval is
checked against the roots of its defining quadratic, solved independently of the closed form.
"""

from __future__ import annotations

import csv
import io
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from click.testing import CliRunner

from advkit._internal.evaluation.engine import AttackResult, Report
from advkit._internal.evaluation.report import as_json, markdown, per_class, wilson, write_reports
from advkit._internal.threat import ThreatModel

Z = NormalDist().inv_cdf(0.975)


def wilson_by_quadratic(k: int, n: int) -> tuple[float, float]:
    """The p with |p - k/n| = z sqrt(p (1 - p) / n): roots of (1 + z²/n) p² - (2k/n + z²/n) p + (k/n)² = 0."""
    ph = k / n
    roots = np.roots([1 + Z * Z / n, -(2 * ph + Z * Z / n), ph * ph])
    lo, hi = sorted(float(r.real) for r in roots)
    return lo, hi


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (84, 100), (3, 500), (499, 500)])
def test_wilson_interval_solves_its_quadratic(k, n):
    lo, hi = wilson(k, n)
    rlo, rhi = wilson_by_quadratic(k, n)
    assert lo == pytest.approx(max(rlo, 0.0), abs=1e-12) and hi == pytest.approx(min(rhi, 1.0), abs=1e-12)
    assert lo <= k / n <= hi


def test_wilson_textbook_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # Newcombe (1998), table I
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0, 0) is None


def _report(classes=("zero", "one", "two")) -> Report:
    # 10 points. labels and what happened to each:
    #   0: class 0, clean ok, broken by pgd      5: class 1, clean wrong
    #   1: class 0, clean ok, robust             6: class 1, clean ok, broken by cw
    #   2: class 0, clean wrong                  7: class 2, clean ok, robust
    #   3: class 1, clean ok, broken by pgd      8: class 2, clean ok, robust
    #   4: class 1, clean ok, robust             9: class 2, clean ok, broken by pgd
    labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    clean_ok = [1, 1, 0, 1, 1, 0, 1, 1, 1, 1]
    broken = {0: "pgd", 3: "pgd", 9: "pgd", 6: "cw"}
    samples = [{"index": i, "label": labels[i], "clean_pred": labels[i] if clean_ok[i] else (labels[i] + 1) % 3,
                "clean_correct": bool(clean_ok[i]), "broken_by": broken.get(i, ""), "norm": 0.1 if i in broken else None}
               for i in range(10)]
    attacks = [
        AttackResult(name="pgd", implementation="torchattacks 3.5.1 PGD", attempted=8, broken=3, seconds=1.25, accuracy=0.5,
                     passes={"forward": 80, "backward": 80}, passes_per_point={"forward": 10.0, "backward": 10.0}),
        AttackResult(name="cw", implementation="torchattacks 3.5.1 CW", minimum_norm=True, attempted=5, broken=1,
                     dropped=2, seconds=2.5, accuracy=0.4, passes={"forward": 5000, "backward": 1250},
                     passes_per_point={"forward": 1000.0, "backward": 250.0}),
        AttackResult(name="aa", implementation="pyautoattack 0.2.0", attempted=0, broken=0, seconds=0.0, accuracy=0.4),
    ]
    # a cascade where aa ran on nothing is not what these samples say, but the table must show it as such
    return Report(n=10, clean_accuracy=0.8, robust_accuracy=0.4, attacks=attacks, threat=ThreatModel("Linf", 0.1),
                  samples=samples, meta={"model": "m", "seed": 0, "dataset": {"name": "d", "classes": list(classes)},
                                         "notes": ["pgd: steps 10 -> 20"]})


def _cells(md: str, first: str) -> list[str]:
    row = next(line for line in md.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def _ci(k, n) -> str:
    lo, hi = wilson_by_quadratic(k, n)
    return f"{100 * max(lo, 0):.1f} to {100 * min(hi, 1):.1f}"


def test_markdown_counts_intervals_dropped_and_no_points_left():
    md = markdown(_report())
    head = _cells(md, "attack")
    assert head == ["attack", "implementation", "attempted", "broken", "dropped", "accuracy after (%)", "95 % CI (%)",
                    "passes / point", "time (s)"]
    assert _cells(md, "clean") == ["clean", "", "10", "", "", "80.00", _ci(8, 10), "", ""]
    assert _cells(md, "pgd") == ["pgd", "torchattacks 3.5.1 PGD", "8", "3", "", "50.00", _ci(5, 10), "10 + 10", "1.2"]
    assert _cells(md, "cw") == ["cw", "torchattacks 3.5.1 CW", "5", "1", "2", "40.00", _ci(4, 10), "1,000 + 250", "2.5"]
    assert _cells(md, "aa") == ["aa", "pyautoattack 0.2.0", "0", "0", "", "n/a (no points left)", "", "n/a", "n/a"]
    assert _cells(md, "**worst case**")[5:7] == ["**40.00**", _ci(4, 10)]
    assert "> pgd: steps 10 -> 20" in md and "Dropped: points where a minimum-norm attack" in md
    assert "0.00" not in _cells(md, "aa")


def test_per_class_accuracy_by_hand():
    rows = per_class(_report())
    # class 0: 3 points, 2 clean-correct, 1 robust; class 1: 4, 3, 1; class 2: 3, 3, 2
    assert [(r["name"], r["n"], r["clean_correct"], r["robust"]) for r in rows] == [
        ("zero", 3, 2, 1), ("one", 4, 3, 1), ("two", 3, 3, 2)]
    md = markdown(_report())
    assert _cells(md, "zero") == ["zero", "3", "66.67", "33.33"]
    assert _cells(md, "one") == ["one", "4", "75.00", "25.00"]
    assert _cells(md, "two") == ["two", "3", "100.00", "66.67"]
    assert [r["name"] for r in per_class(_report(classes=()))] == ["0", "1", "2"]  # no names: the class index
    assert "## Per class" in md and "## Per class" not in markdown(_report(), per_class_table=False)


def test_report_files(tmp_path):
    report = _report()
    write_reports(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["robust_accuracy_ci95"] == pytest.approx(list(wilson_by_quadratic(4, 10)))
    assert data["attacks"][0]["accuracy_ci95"] == pytest.approx(list(wilson_by_quadratic(5, 10)))
    assert data["attacks"][2]["accuracy_ci95"] is None and data["attacks"][2]["ran"] is False
    assert data["attacks"][1]["dropped"] == 2 and data["attacks"][1]["attempted"] == 5
    assert [c["robust_accuracy"] for c in data["per_class"]] == pytest.approx([1 / 3, 1 / 4, 2 / 3])
    assert "accuracy_ci95" not in report.attacks[0].__dict__  # the report object is left as it was
    assert (tmp_path / "report.md").read_text() == markdown(report)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [int(r["robust"]) for r in rows] == [0, 1, 0, 0, 1, 0, 0, 1, 1, 0]

    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "per_class.png")
    assert img.shape[:2] == (400, 600)  # 6 x 4 inches at 100 dpi for up to 10 classes
    colours = {tuple(int(v) for v in p) for p in np.round(img.reshape(-1, img.shape[-1])[:, :3] * 255)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # the clean and robust bars (C0, C1)


def test_as_json_of_an_empty_class_list_and_no_points():
    report = _report()
    report.samples = []
    assert as_json(report)["per_class"] == [] and "## Per class" not in markdown(report)


def _write_run(path, report):
    write_reports(report, path)
    return path


def test_advkit_report_compares_runs(tmp_path):
    from advkit._internal.cli import cli

    a = _write_run(tmp_path / "a", _report())
    other = _report()
    other.attacks = other.attacks[:1]
    other.threat = ThreatModel("Linf", 8 / 255)
    other.robust_accuracy = other.attacks[0].accuracy
    b = _write_run(tmp_path / "b", other)
    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(a), str(b)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == ("| run | model | dataset | threat | n | clean (%) | pgd (%) | cw (%) | aa (%) | worst case (%) "
                        "| passes | 95 % CI (%) |")
    # passes: 80 + 80 + 5000 + 1250 (aa ran on nothing and counted nothing)
    assert lines[2] == (f"| {a} | m | d | Linf 0.1 | 10 | 80.00 | 50.00 | 40.00 | n/a (no points left) | 40.00 | "
                        f"6.41k | {_ci(4, 10)} |")
    assert lines[3] == f"| {b} | m | d | Linf 8/255 | 10 | 80.00 | 50.00 |  |  | 50.00 | 160 | {_ci(5, 10)} |"

    res = runner.invoke(cli, ["report", str(a), str(b), "--format", "csv"])
    rows = list(csv.reader(io.StringIO(res.output)))
    assert rows[0][-4:] == ["worst case (%)", "passes", "ci95 low (%)", "ci95 high (%)"]
    lo, hi = wilson_by_quadratic(4, 10)
    assert rows[1][8:] == ["n/a", "40.00", "6410", f"{100 * lo:.2f}", f"{100 * hi:.2f}"]

    res = runner.invoke(cli, ["report", str(a), "--format", "latex"])
    tex = res.output.splitlines()
    assert tex[0] == r"\begin{tabular}{llllrrrrrrrr}" and tex[1] == r"\toprule" and tex[-1] == r"\end{tabular}"
    assert tex[2].endswith(r"worst case (\%) & passes & 95 \% CI (\%) \\")
    lo, hi = wilson_by_quadratic(4, 10)
    assert tex[4].endswith(rf"& 50.00 & 40.00 & n/a & 40.00 & 6.41k & {100 * lo:.1f}--{100 * hi:.1f} \\")

    out = tmp_path / "table.md"
    res = runner.invoke(cli, ["report", str(a), "-o", str(out)])
    assert res.exit_code == 0 and out.read_text().startswith("| run |")


def test_advkit_report_user_errors(tmp_path):
    from advkit._internal.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no report.json there" in res.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{oops")
    res = runner.invoke(cli, ["report", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "is not readable as a report" in res.output
    assert math.isfinite(Z)


def test_a_real_run_reports_what_its_samples_say(tmp_path, fmnist_test, single_thread):
    from advkit._internal.evaluation.engine import evaluate
    from advkit._internal.models import load_model

    report = evaluate(load_model("smallcnn-fmnist"), fmnist_test.first(40), ["fgsm", "pgd"], eps="0.1", out=tmp_path, quiet=True,
                      attack_opts={"pgd": {"steps": 3}})
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    robust = sum(int(r["robust"]) for r in rows)
    by_fgsm = sum(r["broken_by"] == "fgsm" for r in rows)
    md = (tmp_path / "report.md").read_text()
    clean = sum(int(r["clean_correct"]) for r in rows)
    assert _cells(md, "fgsm")[2:4] == [str(clean), str(by_fgsm)]
    assert _cells(md, "**worst case**")[-4:-2] == [f"**{100 * robust / 40:.2f}**", _ci(robust, 40)]
    # passes, counted: FGSM one forward and one backward per point; PGD-3 three of each, on what FGSM left
    attacks = {r["attack"]: r for r in csv.DictReader(io.StringIO((tmp_path / "attacks.csv").read_text()))}
    left = clean - by_fgsm
    assert (attacks["fgsm"]["forward_passes"], attacks["fgsm"]["backward_passes"]) == (str(clean), str(clean))
    assert (attacks["pgd"]["forward_passes"], attacks["pgd"]["backward_passes"]) == (str(3 * left), str(3 * left))
    assert _cells(md, "pgd")[-2] == "3 + 3"
    assert report.attacks[1].passes_per_point == {"forward": 3.0, "backward": 3.0}
    for c in per_class(report):
        mine = [r for r in rows if int(r["label"]) == c["class"]]
        assert c["robust"] == sum(int(r["robust"]) for r in mine)
    assert (tmp_path / "per_class.png").is_file()
