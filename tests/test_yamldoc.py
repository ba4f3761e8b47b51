"""YAML with positions: the reader every manifest goes through."""
from __future__ import annotations

import pytest

from cidag.errors import ManifestError
from cidag.yamldoc import load_text


def test_values_and_positions():
    doc = load_text("version: 1\nsources:\n  - name: a\n    capabilities: [x, 'y']\n", "f.yaml")
    assert doc.data == {"version": 1, "sources": [{"name": "a", "capabilities": ["x", "y"]}]}
    assert doc.where(("sources", 0, "capabilities", 1)) == (4, 23)
    assert doc.where(("sources", 0, "capabilities"), key=True) == (4, 5)
    assert doc.where(("sources", 0)) == (3, 5)
    assert doc.where(("sources", 0, "nope", "deeper")) == (3, 5)  # nearest parent


def test_anchors_aliases_and_merge_keys():
    doc = load_text("base: &b {timeout: 5, needs: [x]}\nm:\n  <<: *b\n  timeout: 9\nl: [*b, *b]\n", "f.yaml")
    assert doc.data["m"] == {"timeout": 9, "needs": ["x"]}
    assert doc.data["l"] == [{"timeout": 5, "needs": ["x"]}] * 2


@pytest.mark.parametrize("text, message", [
    ("a: 1\na: 2\n", "f.yaml:2:1: duplicate key 'a'"),
    ("? [a, b]\n: 1\n", "f.yaml:1:3: mapping keys must be plain scalars"),
    ("a: 1\n---\nb: 2\n", "f.yaml:2:1: YAML: expected a single document, found another"),
    ("a: !!python/name:os.system ''\n", "f.yaml:1:4: YAML: unsupported YAML tag 'tag:yaml.org,2002:python/name:os.system' (only plain YAML is allowed)"),
    ("a: *nope\n", "f.yaml:1:4: YAML: unknown alias 'nope'"),
    ("", "f.yaml:1:1: file is empty"),
])
def test_errors(text, message):
    with pytest.raises(ManifestError) as err:
        load_text(text, "f.yaml")
    assert str(err.value) == message


def test_alias_bomb_is_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    with pytest.raises(ManifestError) as err:
        load_text("\n".join(lines) + "\n", "bomb.yaml")
    assert "document too large: over 2000000 nodes once aliases are expanded" in str(err.value)
