"""`cidag check FILE --format json|github` (what the pre-commit hook and CI run): every
error is a finding on stdout, including those found while loading a file."""
from __future__ import annotations

import json
import os

import pytest

from conftest import cidag

BAD_FILES = {
    "invalid-yaml": ("modules.yaml", "version: 1\nmodules:\n  - name: a\n    settings: {command: true\n",
                     "yaml-syntax", 5),
    "duplicate-key": ("modules.yaml", "version: 1\nversion: 1\nmodules: []\n", "duplicate-key", 2),
    "not-a-manifest": ("thing.yaml", "foo: 1\n", "not-a-manifest", 1),
    "not-utf8": ("sources.yaml", b"version: 1\nsources: [\xff]\n", "not-text", 2),
    "empty": ("other.yaml", "\n", "empty-file", 1),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_loading_errors_are_findings_in_json_and_github(tmp_path, case):
    name, content, code, line = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = cidag("check", "--format", "json", str(path))
    assert proc.returncode == 2, proc.stderr
    findings = json.loads(proc.stdout)
    assert [(f["file"], f["line"], f["severity"], f["code"]) for f in findings] == [(str(path), line, "error", code)]
    gh = cidag("check", "--format", "github", str(path))
    assert gh.returncode == 2
    assert gh.stdout.startswith(f"::error file={path},line={line},col="), gh.stdout
    assert findings[0]["message"] in gh.stdout


def test_unreadable_file_is_a_finding(tmp_path):
    missing = tmp_path / "modules.yaml"
    proc = cidag("check", "--format", "json", str(missing))
    assert proc.returncode == 2
    (finding,) = json.loads(proc.stdout)
    assert finding["code"] == "unreadable" and "cannot read" in finding["message"]
    if os.geteuid() != 0:  # root reads anything
        missing.write_text("version: 1\nmodules: []\n")
        missing.chmod(0)
        (finding,) = json.loads(cidag("check", "--format", "json", str(missing)).stdout)
        assert finding["code"] == "unreadable" and "ermission denied" in finding["message"]


def test_a_good_file_next_to_a_bad_one_is_still_linted(tmp_path):
    bad = tmp_path / "junk.yaml"
    bad.write_text("foo: 1\n")
    mods = tmp_path / "modules.yaml"
    mods.write_text("version: 1\nmodules:\n  - name: a\n    type: exec\n    needs: [nothing-provides-it]\n"
                    "    frequency: per-boot\n    settings: {command: 'true'}\n")
    findings = json.loads(cidag("check", "--format", "json", str(bad), str(mods)).stdout)
    assert {(os.path.basename(f["file"]), f["code"]) for f in findings} >= {
        ("junk.yaml", "not-a-manifest"), ("modules.yaml", "unprovided-need")}


@pytest.mark.parametrize("top", ["modulez", "module", "Modules"])
def test_a_top_level_typo_gets_the_same_message_both_ways(tmp_path, top):
    path = tmp_path / "mine.yaml"
    path.write_text(f"version: 1\n{top}:\n  - name: a\n    type: exec\n")
    as_file = cidag("check", str(path))
    as_option = cidag("check", "--modules", str(path))
    assert as_file.returncode == as_option.returncode == 2
    assert f"{path}:2:1: unknown key '{top}' (did you mean 'modules'?)" in as_file.stdout.splitlines()
    assert as_file.stdout == as_option.stdout


BAD_MANIFESTS = [
    "version: 2\nmodules: []\n",
    "version: 1\nmodules: {}\n",
    "version: 1\nmodules:\n  - 3\n",
    "version: 1\nmodules:\n  - name: a\n    type: ''\n",
    "version: 1\nmodules:\n  - name: a\n    type: exec\n    settings: 3\n",
    "version: 1\nmodules:\n  - name: a\n    type: exec\n    priority: x\n    frequency: always\n"
    "    timeout: 0\n    needs: x\n    settings: {command: 'true'}\n",
    "version: 1\nmodules:\n  - name: a\n    type: exec\n    needs: [x]\n    wants: [x]\n"
    "    settings: {command: '${NO_SUCH_VARIABLE_HERE}'}\n",
    "version: 1\nmodules:\n  - name: a\n    type: exec\n    timeout: soon\n    bad: !!python/name:os.system\n",
    "version: 1\nmodules: [*nowhere]\n",
]


@pytest.mark.parametrize("text", BAD_MANIFESTS)
def test_every_finding_has_a_code(tmp_path, text):
    path = tmp_path / "modules.yaml"
    path.write_text(text)
    proc = cidag("check", "--format", "json", str(path))
    assert proc.returncode == 2, proc.stderr
    findings = json.loads(proc.stdout)
    assert findings, proc.stderr
    assert all(f["code"] for f in findings), findings


def test_sources_without_capabilities_and_bad_select_have_codes(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("version: 1\nselect: fastest\nsources:\n  - name: s\n    type: static\n    capabilities: []\n")
    findings = json.loads(cidag("check", "--format", "json", str(path)).stdout)
    assert {f["code"] for f in findings} >= {"bad-value", "no-capabilities"}
    assert all(f["code"] for f in findings), findings
