"""The one way a benchmark writes its table into a document: between two markers it owns.

A script with tag ``bench_x`` owns what lies between ``<!-- bench_x:begin -->`` and
``<!-- bench_x:end -->``; everything else in the document is prose, written by hand and
never touched. A document without the markers gets them appended (under ``heading``).
"""

from __future__ import annotations

from pathlib import Path


def markers(tag: str) -> tuple[str, str]:
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def write_section(doc: Path, tag: str, text: str, heading: str = "") -> None:
    """Replace the section ``tag`` of ``doc`` with ``text``."""
    begin, end = markers(tag)
    body = doc.read_text()
    if begin not in body or end not in body:
        body = body.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + f"{begin}\n{end}\n"
    head, rest = body.split(begin, 1)
    tail = rest.split(end, 1)[1]
    doc.write_text(f"{head}{begin}\n{text.strip(chr(10))}\n{end}{tail}")
