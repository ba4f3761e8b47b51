"""`cidag schema`: JSON Schema of the manifests, per-type settings, and the pre-commit hook file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cidag.cli import COMMANDS, main
from cidag.commands.schema import manifest_schema, settings_to_json_schema
from cidag.types import builtin_types

TOP = Path(__file__).resolve().parent.parent


def cli(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


@pytest.mark.parametrize("kind", ["sources", "modules", "both"])
def test_refs_resolve_and_every_builtin_type_has_settings(kind):
    schema = manifest_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    json.dumps(schema)
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/") and ref[8:] in schema["$defs"], ref
    kinds = {"sources": ["source"], "modules": ["module"], "both": ["source", "module"]}[kind]
    for k in kinds:
        names = sorted(builtin_types(k))
        entry = schema["$defs"][k]
        assert entry["properties"]["type"]["anyOf"][0]["enum"] == names
        for name in names:
            assert f"{k}-{name}-settings" in schema["$defs"]
    if kind == "sources":
        assert not any(key.startswith("module") for key in schema["$defs"])


def test_top_level_keys_follow_the_spec():
    defs = manifest_schema("both")["$defs"]
    assert set(defs["source"]["properties"]) == {"name", "type", "capabilities", "timeout", "needs", "secrets",
                                                     "settings"}
    assert set(defs["module"]["properties"]) == {
        "name", "type", "needs", "wants", "provides", "depends_on", "after", "priority", "frequency",
        "timeout", "secrets", "settings"}
    assert set(defs["sources-manifest"]["properties"]) == {"version", "select", "sources"}
    assert set(defs["modules-manifest"]["properties"]) == {"version", "modules", "milestones"}  # milestones: docs/manifests.md
    assert defs["source"]["additionalProperties"] is False


def test_settings_subset_conversion():
    converted = settings_to_json_schema({
        "type": "object",
        "properties": {"delay": {"format": "duration", "default": 0}, "n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    })
    assert converted["additionalProperties"] is False  # the subset refuses unknown keys
    assert converted["required"] == ["n"]
    patterns = [alt.get("pattern") for alt in converted["properties"]["delay"]["anyOf"]]
    assert any(p and re.match(p, "1m30s") for p in patterns)
    assert any(p and re.search(p, "${DELAY:-2s}") for p in patterns)
    assert converted["properties"]["n"]["anyOf"][0] == {"type": "integer", "minimum": 1}
    assert settings_to_json_schema(None) == {"type": "object",
                                            "description": "settings of this type (not declared by the type)"}


def test_a_new_builtin_type_appears_without_touching_schema(tmp_path, monkeypatch):
    (tmp_path / "cidag_fake_probe.py").write_text(
        '"""A fake source for the schema test."""\n'
        'SETTINGS = {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}\n'
        "def probe(ctx):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cidag.sources

    monkeypatch.setitem(cidag.sources.BUILTIN_SOURCES, "fake-probe", "cidag_fake_probe")
    schema = manifest_schema("sources")
    fake = schema["$defs"]["source-fake-probe-settings"]
    assert fake["required"] == ["url"] and fake["description"] == "A fake source for the schema test."


def test_cli_writes_a_file(tmp_path, capsys):
    out_file = tmp_path / "s.json"
    rc, _, _ = cli(capsys, "schema", "--kind", "modules", "-o", str(out_file))
    assert rc == 0
    assert json.loads(out_file.read_text())["title"] == "cidag modules.yaml"
    rc, out, _ = cli(capsys, "schema")
    assert rc == 0 and json.loads(out)["oneOf"]
    rc, _, err = cli(capsys, "schema", "--kind", "nope")
    assert rc == 2 and "nope" in err


SHIPPED = [p for p in (TOP / "sources.yaml", TOP / "modules.yaml") if p.exists()] + sorted(
    (TOP / "cidag/defaults").glob("*.yaml"))


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = manifest_schema("both")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(TOP)))
def test_shipped_manifests_validate(path):
    validator = _validator()
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not ({"sources", "modules"} & set(doc)):
        pytest.skip("not a manifest")
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []


@pytest.mark.parametrize("text, where", [
    ("version: 1\nsources: [{name: a, type: static, capabilities: [x], settings: {dealy: 1}}]",
     ["sources", 0, "settings"]),
    ("version: 1\nsources: [{name: a, type: static, capabilites: [x]}]", ["sources", 0]),
    ("version: 1\nmodules: [{name: m, type: exec, frequency: weekly, settings: {command: 'true'}}]",
     ["modules", 0, "frequency"]),
    ("version: 1\nmodules: [{name: m, type: exec, timeout: soon, settings: {command: 'true'}}]",
     ["modules", 0, "timeout"]),
    ("version: 1\nmodules: [{name: Bad Name, type: exec, settings: {command: 'true'}}]",
     ["modules", 0, "name"]),
    ("version: 2\nmodules: []", ["version"]),
])
def test_bad_manifests_are_rejected_where_they_are_wrong(text, where):
    validator = _validator()
    errors = list(validator.iter_errors(yaml.safe_load(text)))
    assert errors
    paths = [list(c.absolute_path) for e in errors for c in (e.context or [e])]
    assert where in paths


def test_pre_commit_hooks_file():
    hooks = yaml.safe_load((TOP / ".pre-commit-hooks.yaml").read_text())
    ids = {h["id"]: h for h in hooks}
    hook = ids["cidag-check"]
    assert hook["entry"].split()[:2] == ["cidag", "check"] and "check" in COMMANDS
    assert hook["language"] == "python" and hook["pass_filenames"] is True
    files = re.compile(hook["files"])
    assert files.search("sources.yaml") and files.search("etc/cidag/modules.yml")
    assert not files.search("docker-compose.yaml") and not files.search("my-sources.yaml.bak")
