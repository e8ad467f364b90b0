"""The sections of docs/ that benchmark scripts write: each owned by one script, none inside another.

A script rewrites what lies between its two markers; a section nested inside another script's
would be erased the next time the outer script writes its table.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- ([\w-]+):(begin|end) -->")


def test_generated_sections_are_paired_and_disjoint():
    tags = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        open_tag = None
        for m in MARKER.finditer(doc.read_text()):
            tag, kind = m.groups()
            if kind == "begin":
                assert open_tag is None, f"{doc.name}: {tag} begins inside {open_tag}"
                open_tag = tag
            else:
                assert open_tag == tag, f"{doc.name}: {tag} ends while {open_tag} is open"
                open_tag = None
                tags.append(tag)
        assert open_tag is None, f"{doc.name}: {open_tag} never ends"
    assert len(tags) == len(set(tags)), "a script owns two sections"
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    assert set(tags) <= scripts, f"sections no script writes: {set(tags) - scripts}"


def test_write_section_replaces_only_its_own_section(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("_docs", None)
    from _docs import write_section

    doc = tmp_path / "d.md"
    doc.write_text("intro\n<!-- a:begin -->\nold a\n<!-- a:end -->\nmiddle\n<!-- b:begin -->\nold b\n<!-- b:end -->\n")
    write_section(doc, "a", "new a\n")
    assert doc.read_text() == ("intro\n<!-- a:begin -->\nnew a\n<!-- a:end -->\nmiddle\n"
                               "<!-- b:begin -->\nold b\n<!-- b:end -->\n")
    write_section(doc, "c", "c table", heading="## C")
    assert doc.read_text().endswith("<!-- b:end -->\n\n## C\n\n<!-- c:begin -->\nc table\n<!-- c:end -->\n")


def _row(folder: Path, name: str, clean, first, robust, draws: int) -> None:
    """A finished row as advkit eval leaves it: report.json, results.csv and, for a random model, the log."""
    ev = folder / name / "eval"
    ev.mkdir(parents=True)
    n = len(clean)
    ev.joinpath("report.json").write_text(json.dumps({
        "n": n, "draws": draws, "stochastic": draws > 1, "clean_accuracy": sum(clean) / n,
        "robust_accuracy": sum(robust) / n, "attacks": [{"name": "pgd", "accuracy": sum(first) / n}]}))
    lines = ["index,clean_correct,robust,broken_by"]
    by = ["" if r else "pgd" if not f else "aa" for f, r in zip(first, robust)]  # the cascade's attack that broke it
    lines += [f"{i},{c},{r},{b}" for i, (c, r, b) in enumerate(zip(clean, robust, by))]
    ev.joinpath("results.csv").write_text("\n".join(lines) + "\n")
    ev.joinpath("progress.jsonl").write_text(json.dumps(
        {"stage": "cascade:0:pgd", "batch": 0, "index": list(range(n)), "score": first}) + "\n")


def test_paired_differences_read_random_rows_per_draw(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("table_report", None)
    import table_report

    base = ([1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0])
    rand = ([0.9, 1.0, 0.2, 0.5], [0.6, 0.3, 0.0, 0.5], [0.5, 0.1, 0.0, 0.2])
    _row(tmp_path, "base", *base, draws=1)
    _row(tmp_path, "rand", *rand, draws=10)
    points, diffs = table_report.paired(tmp_path, "rand", "base")
    assert points == 4
    for k in range(3):
        d = [r - b for r, b in zip(rand[k], base[k])]
        assert diffs[k][0] == pytest.approx(statistics.fmean(d))
        assert diffs[k][1] == pytest.approx(statistics.stdev(d) / 2)


def test_a_row_missing_a_seed_is_marked_and_left_out_of_the_means(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("table_report", None)
    import table_report

    s0, s1 = tmp_path / "table", tmp_path / "table-seed1"
    for folder, clean in ((s0, [1, 1, 1, 0]), (s1, [1, 0, 1, 0])):
        _row(folder, "base", clean, [1, 0, 0, 0], [1, 0, 0, 0], draws=1)
    _row(s0, "new", [1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], draws=1)
    text = table_report.seeds_table([s0, s1], ["base", "new"], str)
    base, new = (line for line in text.splitlines() if line.startswith(("| base", "| new")))
    assert "75.0 / 50.0 (mean 62.5)" in base  # (3/4 + 2/4) / 2
    assert "50.0 / not run |" in new and "mean" not in new and "not run yet in table-seed1" in new
    pairs = table_report.paired_table([s0, s1], [("new", "base")], str)
    row = pairs.splitlines()[-1]
    assert row.startswith("| new (not run yet in table-seed1) | base | 4 |")
    assert "-25.0 ± 25.0 / not run |" in row  # clean differences 0, 0, -1, 0: mean -0.25, sd 0.5, /2
    subset = table_report.subset_table([s0, s1], ["base", "new"], str, 2)
    assert "| base | 100.0 / 50.0 (75.0) |" in subset  # first two points: seed 0 1, 1 and seed 1 1, 0
    assert "| new (not run yet in table-seed1) | 100.0 / not run |" in subset
