"""The README and docs/ as a new user reads them: after the demo every command in them runs,
every manifest in them loads and runs on an empty root.

Fenced snippets are found in README.md and docs/*.md. What happens to one depends on its
language, unless the line just before its fence is a marker `<!-- snippet: KIND -->`
(invisible on GitHub):

| snippet | test |
| --- | --- |
| `sh` | run by bash (`set -e`) after the demo, with `.venv/bin` (a stand-in), the demo's state, and `fleet/` (the demo's run records) |
| `yaml` with `sources:` or `modules:` | a manifest: `cidag check`, then `cidag run` on an empty root, paired with a generated other half that provides (or wants) exactly its capabilities |
| other `yaml`, `json`, `ini`, `python` | must parse (python: compile) |
| `text` | a diagram or plain text: nothing to check |
| marker `output` | a session: each `$ ` line is run as a command, exit 0 (the output shown is an example) |
| marker `synopsis` | a usage line: every `--option` in it exists in the command's `--help` |
| marker `serves` | a command that serves until stopped: it prints its URL, then SIGTERM stops it cleanly |
| marker `annotated` | JSON with `//` comments: must parse once they are stripped |
| marker `partial` | a fragment: must still parse (yaml, json) but is not run |
| marker `not-run: WHY` | a command that must not run here (installs on this machine, is the set-up itself): `bash -n` only |

A fence with no language and no marker fails the test, so a new snippet gets one (`text` if
nothing in it can be run or parsed).
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli_env

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!-- snippet: ([a-z-]+)(?::\s*(.*?))? -->\s*$")
KINDS = {"output", "synopsis", "serves", "annotated", "partial", "not-run"}


@dataclass
class Snippet:
    file: Path
    line: int
    lang: str
    body: str
    kind: str  # the marker, or "" when the language decides
    why: str = ""

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def snippets() -> list[Snippet]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.match(before.strip())
            out.append(Snippet(path, line, m.group(1), m.group(2), marker.group(1) if marker else "",
                               (marker.group(2) or "") if marker else ""))
    return out


SNIPPETS = snippets()


def _ids(items):
    return [s.where for s in items]


# -- the demo, and the shell a user has after it --------------------------------------


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory):
    """Run scripts/demo.sh as `make demo` does (cidag from a stand-in .venv/bin), with its
    state in HOME/demo; return (home, env) for the commands a user types next."""
    home = tmp_path_factory.mktemp("user")
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "cidag"
    shim.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}} "
                    f"exec {shlex.quote(sys.executable)} -m cidag \"$@\"\n")
    shim.chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH={shlex.quote(str(bin_dir))}:"$PATH"; export PATH\n')
    scratch = home / "tmp"
    scratch.mkdir()
    env = cli_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(scratch),
                   "CIDAG_DEMO_DIR": str(home / "demo")})
    proc = subprocess.run(["bash", str(REPO / "scripts/demo.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(scratch.iterdir()) == [], "the demo left its temporary folder behind"
    assert "digraph" not in proc.stdout  # the picture's path, not 130 lines of DOT
    assert f"export CIDAG_ROOT={home / 'demo/root'}" in proc.stdout
    assert (home / "demo/root/var/lib/cidag/last-run.json").is_file()
    # docs/analyze.md reads a fleet's records from fleet/: the demo's run stands in for one
    (home / "fleet").mkdir()
    for record in (home / "demo/root/var/lib/cidag/runs").glob("*.json"):
        (home / "fleet" / record.name).write_bytes(record.read_bytes())
    user_env = dict(env, CIDAG_ROOT=str(home / "demo/root"))
    del user_env["CIDAG_DEMO_DIR"]
    return home, user_env, proc.stdout


def sh(script: str, home: Path, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", script], cwd=home, env=env, capture_output=True, text=True,
                          timeout=timeout)


def serve_then_stop(command: str, home: Path, env: dict) -> None:
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (command, url, proc.stderr.read() if proc.poll() is not None else "")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 0, (command, rc)


def test_demo_state_is_where_it_says(after_demo):
    home, env, out = after_demo
    assert "demo/root/var/lib/cidag/last-run.json" in out
    status = subprocess.run(["cidag", "status"], env=env, cwd=home, capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.startswith("status: done"), status.stdout + status.stderr
    assert (home / "demo/.cidag-demo").is_file()  # a second demo may replace it, nothing else


def test_demo_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "demo"
    mine.mkdir()
    (mine / "thesis.tex").write_text("do not delete")
    proc = subprocess.run(["bash", str(REPO / "scripts/demo.sh")], capture_output=True, text=True,
                          env=cli_env({"CIDAG_DEMO_DIR": str(mine)}), timeout=60)
    assert proc.returncode == 2 and "was not made by make demo" in proc.stderr
    assert (mine / "thesis.tex").read_text() == "do not delete"


# -- the README's table of commands ---------------------------------------------------


def table_commands() -> list[str]:
    """Each command of the README's table as runnable forms: `[X]` without and with X,
    `a/b` as each of them, placeholders filled."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| command | does |"):]
    table = table[:table.index("\n\n")]
    rows = [re.match(r"\| `([^`]*)`", line).group(1) for line in table.splitlines()[2:]]
    out = []
    for row in rows:
        forms = [[]]
        for token in re.findall(r"\[[^\]]*\]|\S+", row):
            if token.startswith("["):
                forms = forms + [f + [token[1:-1]] for f in forms]
            elif "/" in token and not token.startswith("-"):
                forms = [f + [alt] for f in forms for alt in token.split("/")]
            else:
                forms = [f + [token] for f in forms]
        out.extend(" ".join(f) for f in forms)
    return out


FILL = {"DIR": "try-root", "FILES": "{repo}/sources.yaml {repo}/modules.yaml", "CAPABILITY": "hostname",
        "FILE.svg": "boot.svg", "FILE.json": "boot.json", "MILESTONE": "login"}


def test_readme_table_parses():
    commands = table_commands()
    assert "cidag status" in commands and "cidag status --wait" in commands
    assert "cidag analyze critical-chain" in commands and "cidag query CAPABILITY" in commands
    assert len(commands) >= 12


@pytest.mark.parametrize("command", table_commands())
def test_every_command_of_the_readme_table_works_after_the_demo(after_demo, command):
    home, env, _ = after_demo
    filled = " ".join(FILL.get(w, w) for w in command.split()).format(repo=REPO)
    if command.startswith("cidag serve-metadata"):
        serve_then_stop(filled, home, env)
        return
    proc = sh(filled, home, env)
    assert proc.returncode == 0, (filled, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr


# -- every fenced snippet ---------------------------------------------------------------


def test_every_snippet_is_handled():
    for s in SNIPPETS:
        assert not (s.kind and s.kind not in KINDS), f"{s.where}: unknown snippet marker {s.kind!r}"
        assert s.lang or s.kind, f"{s.where}: give the fence a language or a <!-- snippet: KIND --> marker"
        assert s.kind != "not-run" or s.why, f"{s.where}: say why it is not run"
    assert len(SNIPPETS) >= 20


RUN = [s for s in SNIPPETS if not s.kind and s.lang in ("sh", "bash", "console")]
OUTPUT = [s for s in SNIPPETS if s.kind == "output"]


@pytest.mark.parametrize("snip", RUN, ids=_ids(RUN))
def test_shell_snippets_run_after_the_demo(after_demo, snip):
    home, env, _ = after_demo
    proc = sh(snip.body, home, env)
    assert proc.returncode == 0, (snip.where, proc.stdout[-1500:], proc.stderr[-1500:])


@pytest.mark.parametrize("snip", OUTPUT, ids=_ids(OUTPUT))
def test_commands_shown_with_their_output_run(after_demo, snip):
    home, env, _ = after_demo
    commands = [line[2:] for line in snip.body.splitlines() if line.startswith("$ ")]
    assert commands, f"{snip.where}: an output snippet shows at least one `$ ` command"
    for command in commands:
        proc = sh(command, home, env)
        assert proc.returncode == 0 and proc.stdout, (snip.where, command, proc.stderr[-1500:])


def test_synopses_name_real_options():
    for snip in (s for s in SNIPPETS if s.kind == "synopsis"):
        words = snip.body.split()
        sub = words[1]
        helptext = subprocess.run([sys.executable, "-m", "cidag", sub, "--help"], capture_output=True, text=True,
                                  env=cli_env()).stdout
        for option in re.findall(r"--[a-z][a-z-]*", snip.body):
            assert option in helptext, f"{snip.where}: cidag {sub} has no {option}"


def test_serving_snippets_serve(after_demo):
    home, env, _ = after_demo
    serving = [s for s in SNIPPETS if s.kind == "serves"]
    assert serving
    for snip in serving:
        serve_then_stop(snip.body.replace("\\\n", " ").strip(), home, env)


def test_commands_not_run_are_valid_shell():
    for snip in (s for s in SNIPPETS if s.kind == "not-run"):
        proc = subprocess.run(["bash", "-n"], input=snip.body, capture_output=True, text=True)
        assert proc.returncode == 0, (snip.where, proc.stderr)


def test_data_snippets_parse():
    for snip in SNIPPETS:
        if snip.kind in ("output", "synopsis", "serves", "not-run"):
            continue
        body = snip.body
        if snip.kind == "annotated":
            body = re.sub(r"\s*//[^\n]*", "", body)
        try:
            if snip.lang == "yaml":
                yaml.safe_load(body)
            elif snip.lang == "json":
                json.loads(body)
            elif snip.lang == "ini":
                configparser.ConfigParser(strict=False, interpolation=None).read_string(body)
            elif snip.lang == "python":
                compile(body, snip.where, "exec")
        except Exception as exc:  # any parse error names the snippet
            pytest.fail(f"{snip.where}: {type(exc).__name__}: {exc}")


# -- manifests ------------------------------------------------------------------------


def manifest_snippets() -> list[Snippet]:
    out = []
    for s in SNIPPETS:
        if s.lang != "yaml" or s.kind:
            continue
        data = yaml.safe_load(s.body)
        if isinstance(data, dict) and ("sources" in data or "modules" in data):
            out.append(s)
    return out


def other_half(data: dict) -> tuple[str, dict]:
    """The manifest that completes `data`: for sources, one module wanting all they export;
    for modules, one static source giving what they need or want and do not provide."""
    if "sources" in data:
        caps = sorted({c for s in data["sources"] for c in s.get("capabilities", [])})
        return "modules", {"version": 1, "modules": [{"name": "reader", "type": "exec", "frequency": "per-boot",
                                                      "wants": caps, "settings": {"command": "true"}}]}
    provided = {c for m in data["modules"] for c in m.get("provides", [])}
    caps = {c for m in data["modules"] for c in m.get("needs", []) + m.get("wants", [])} - provided
    caps |= {"instance-id"}
    values = {c: "i-snippet" if c == "instance-id" else "x" for c in sorted(caps)}
    return "sources", {"version": 1, "sources": [{"name": "given", "type": "static", "capabilities": sorted(caps),
                                                  "settings": {"data": values}}]}


MANIFESTS = manifest_snippets()


@pytest.mark.parametrize("snip", MANIFESTS, ids=_ids(MANIFESTS))
def test_manifest_snippets_check_and_run_on_an_empty_root(tmp_path, snip):
    data = yaml.safe_load(snip.body)
    kind = "sources" if "sources" in data else "modules"
    other, other_data = other_half(data)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / f"{kind}.yaml").write_text(snip.body)
    (conf / f"{other}.yaml").write_text(yaml.safe_dump(other_data))
    env = cli_env()
    check = subprocess.run([sys.executable, "-m", "cidag", "check", "--config-dir", str(conf)],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0, (snip.where, check.stdout, check.stderr)
    root = tmp_path / "root"
    run = subprocess.run([sys.executable, "-m", "cidag", "run", "-q", "--config-dir", str(conf), "--root", str(root)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, (snip.where, run.stderr)
    record = json.loads((root / "var/lib/cidag/last-run.json").read_text())
    ended = {n["id"]: n["status"] for n in record["nodes"] if n["kind"] == "module"}
    assert set(ended.values()) == {"ok"}, (snip.where, ended)


def readme_block(first_line: str) -> str:
    return next(s.body for s in SNIPPETS if s.file.name == "README.md" and s.body.startswith(first_line))


def test_readme_manifests_work_together_on_an_empty_root(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "sources.yaml").write_text(readme_block("# sources.yaml"))
    (conf / "modules.yaml").write_text(readme_block("# modules.yaml"))
    root = tmp_path / "try"
    proc = subprocess.run([sys.executable, "-m", "cidag", "run", "--config-dir", str(conf), "--root", str(root)],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "etc/hostname").read_text() == "web-1\n"
    summary = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line.startswith("module:")}
    assert summary == {"module:set-hostname": "ok"}


def test_readme_plugin_works_on_an_empty_root(tmp_path):
    pkg = tmp_path / "lib/mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "hello.py").write_text(readme_block("# mypkg/hello.py"))
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "sources.yaml").write_text(textwrap.dedent("""
        version: 1
        sources:
          - {name: seed, type: static, capabilities: [instance-id, hostname], settings: {data: {instance-id: i-1, hostname: web-1}}}
        """))
    (conf / "modules.yaml").write_text(textwrap.dedent("""
        version: 1
        modules:
          - {name: motd, type: "mypkg.hello:run", wants: [hostname], settings: {greeting: hello}}
        """))
    env = cli_env({"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path / 'lib'}"})
    assert subprocess.run([sys.executable, "-m", "cidag", "check", "--config-dir", str(conf)],
                          env=env, capture_output=True).returncode == 0
    root = tmp_path / "root"
    proc = subprocess.run([sys.executable, "-m", "cidag", "run", "-q", "--config-dir", str(conf), "--root", str(root)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/motd").read_text() == "hello from web-1\n"
