"""docs/plugins.md documents the plugin API and the capabilities exactly as the code defines them."""

from __future__ import annotations

import re
from pathlib import Path

import advkit.plugin
from advkit._internal.registry import CAPABILITIES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


def test_the_plugin_api_table_lists_exactly_the_plugin_namespace():
    rows = re.findall(r"^\| `(\w+)` \|", _section("## 2. The plugin API"), flags=re.M)
    assert len(rows) == len(set(rows)), "a name is documented twice"
    assert set(rows) == set(advkit.plugin.__all__), (sorted(set(advkit.plugin.__all__) - set(rows)),
                                                     sorted(set(rows) - set(advkit.plugin.__all__)))


def test_every_capability_is_documented_and_no_other():
    rows = set(re.findall(r"^\| (\w+) \| `(\w+)=", _section("## 3. Registering"), flags=re.M))
    declared = {(kind, cap) for kind, caps in CAPABILITIES.items() for cap in caps}
    assert rows == declared, (sorted(declared - rows), sorted(rows - declared))
