"""The sections of docs/ that benchmark scripts write: each owned by one script, none inside another.

A script rewrites what lies between its two markers; a section nested inside another script's
would be erased the next time the outer script writes its table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

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
