"""SSH host keys in two nodes: `ssh-host-keys` makes the one key a login needs, `ssh-host-keys-rest`
the others and prints them as cloud-init does. Real ssh-keygen, a real target root."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cidag.modules import ssh_host_keys
from cidag.testing import make_context
from conftest import REPO, cidag, cli_env
from modules_common import make_root

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
PREFIX = {"rsa": "ssh-rsa ", "ecdsa": "ecdsa-sha2-", "ed25519": "ssh-ed25519 "}


def host_keys(root: Path) -> list[str]:
    """The key types with a private key in ROOT/etc/ssh, sorted."""
    return sorted(p.name[len("ssh_host_"):-len("_key")] for p in (root / "etc/ssh").glob("ssh_host_*_key"))


def node(root: Path, part: str, cc: dict | None = None, tmp: Path | None = None, fips: str | None = None,
         iid: str = "iid-keys"):
    """Run one ssh-host-keys node (settings part=PART) on ROOT; return the log messages."""
    settings: dict = {"part": part}
    if fips is not None:
        flag = (tmp or root.parent) / "fips_enabled"
        flag.write_text(fips + "\n")
        settings["fips_flag"] = str(flag)
    else:
        settings["fips_flag"] = str(root.parent / "no-such-fips-flag")
    ctx, run = make_context("module", "ssh-host-keys", settings, caps={"cloud-config": cc or {}}, root=root,
                            instance_id=iid, name=f"keys-{part}")
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Keep(logging.DEBUG)
    ctx.log.addHandler(handler)
    ctx.log.setLevel(logging.DEBUG)
    try:
        run(ctx)
    finally:
        ctx.log.removeHandler(handler)
    return messages


def assert_key(root: Path, t: str) -> None:
    key, pub = root / f"etc/ssh/ssh_host_{t}_key", root / f"etc/ssh/ssh_host_{t}_key.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert pub.read_text().startswith(PREFIX[t])
    # The private key matches its public key.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == pub.read_text().split()[:2]


def test_login_node_makes_exactly_ed25519_by_default(tmp_path):
    root = make_root(tmp_path)
    log = node(root, "login")
    assert host_keys(root) == ["ed25519"]
    assert sorted(p.name for p in (root / "etc/ssh").iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert_key(root, "ed25519")
    assert "root@iid-keys" in (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    assert not any("BEGIN SSH HOST KEY" in m for m in log)  # the login node prints nothing


def test_login_node_makes_ecdsa_under_fips(tmp_path):
    root = make_root(tmp_path)
    log = node(root, "login", tmp=tmp_path, fips="1")
    assert host_keys(root) == ["ecdsa"]
    assert_key(root, "ecdsa")
    assert any("FIPS mode: no ed25519" in m for m in log), log
    # The rest node leaves ed25519 out too, and makes rsa.
    node(root, "rest", tmp=tmp_path, fips="1")
    assert host_keys(root) == ["ecdsa", "rsa"]
    # A flag file saying 0 is not FIPS.
    other = make_root(tmp_path / "other")
    node(other, "login", tmp=tmp_path, fips="0")
    assert host_keys(other) == ["ed25519"]


def test_login_node_follows_the_configured_types(tmp_path):
    root = make_root(tmp_path)
    node(root, "login", {"ssh_genkeytypes": ["rsa"]})
    assert host_keys(root) == ["rsa"]
    assert_key(root, "rsa")
    # The configured order does not matter: ed25519 first, then ecdsa, then rsa.
    root2 = make_root(tmp_path / "two")
    node(root2, "login", {"ssh_genkeytypes": ["rsa", "ecdsa"]})
    assert host_keys(root2) == ["ecdsa"]
    node(root2, "rest", {"ssh_genkeytypes": ["rsa", "ecdsa"]})
    assert host_keys(root2) == ["ecdsa", "rsa"]


def test_unknown_types_reported_in_one_line(tmp_path):
    root = make_root(tmp_path)
    log = node(root, "login", {"ssh_genkeytypes": ["dsa", "ed25519", "sk-foo"]})
    assert host_keys(root) == ["ed25519"]
    lines = [m for m in log if "unknown key type" in m]
    assert lines == ["ssh_genkeytypes: unknown key type(s) 'dsa', 'sk-foo' ignored (cidag makes rsa, ecdsa, ed25519)"]
    # The rest node does not say it again, and makes nothing more.
    log = node(root, "rest", {"ssh_genkeytypes": ["dsa", "ed25519", "sk-foo"]})
    assert not [m for m in log if "unknown key type" in m]
    assert host_keys(root) == ["ed25519"]
    # Only unknown types: no key, a warning, not a failure.
    empty = make_root(tmp_path / "empty")
    log = node(empty, "login", {"ssh_genkeytypes": ["dsa"]})
    assert host_keys(empty) == [] and any("none made" in m for m in log)


def fingerprint_block(log: list[str]) -> list[str]:
    start = log.index("-----BEGIN SSH HOST KEY FINGERPRINTS-----")
    end = log.index("-----END SSH HOST KEY FINGERPRINTS-----")
    assert log[start - 1] == log[end + 1] == "#" * 61
    return log[start + 1:end]


def keys_block(log: list[str]) -> list[str]:
    return log[log.index("-----BEGIN SSH HOST KEY KEYS-----") + 1:log.index("-----END SSH HOST KEY KEYS-----")]


def test_rest_node_makes_the_others_and_prints_them(tmp_path):
    root = make_root(tmp_path)
    node(root, "login")
    first = (root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
    log = node(root, "rest")
    assert host_keys(root) == ["ecdsa", "ed25519", "rsa"]
    for t in ("ecdsa", "ed25519", "rsa"):
        assert_key(root, t)
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == first  # rest never deletes
    assert not list((root / "etc/ssh").glob(".cidag-*"))  # no temporary file left
    assert any(m == "making host keys: rsa, ecdsa" for m in log), log
    pubs = sorted((root / "etc/ssh").glob("ssh_host_*key.pub"))
    expected = [subprocess.run(["ssh-keygen", "-lf", str(p)], capture_output=True, text=True,
                               check=True).stdout.strip() for p in pubs]
    assert fingerprint_block(log) == expected
    assert [line.split()[-1] for line in expected] == ["(ECDSA)", "(ED25519)", "(RSA)"]
    assert keys_block(log) == [p.read_text().strip() for p in pubs]
    # The root is not /: nothing was written to a console, the log holds the block.
    ctx, _ = make_context("module", "ssh-host-keys", {"part": "rest"}, root=root)
    assert ssh_host_keys.console_path(ctx) is None


def test_console_blacklists_and_emit_switch(tmp_path):
    root = make_root(tmp_path)
    node(root, "all", {"ssh_genkeytypes": ["ed25519", "ecdsa"]})
    cc = {"ssh_genkeytypes": ["ed25519", "ecdsa"], "ssh_fp_console_blacklist": ["ssh-ed25519"],
          "ssh_key_console_blacklist": ["ecdsa-sha2-nistp256"]}
    log = node(root, "rest", cc)
    fps = fingerprint_block(log)
    assert len(fps) == 1 and fps[0].endswith("(ECDSA)")
    keys = keys_block(log)
    assert keys == [(root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip()]
    log = node(root, "rest", {"ssh": {"emit_keys_to_console": False}})
    assert not any("SSH HOST KEY" in m for m in log)
    assert "host keys not printed: ssh.emit_keys_to_console is false" in log
    # A bad console section fails the node, but only once the keys are made.
    bare = make_root(tmp_path / "bare")
    node(bare, "login")
    with pytest.raises(ValueError, match="ssh_fp_console_blacklist"):
        node(bare, "rest", {"ssh_fp_console_blacklist": "ssh-rsa"})
    assert host_keys(bare) == ["ecdsa", "ed25519", "rsa"]


def test_write_console_appends_the_block(tmp_path):
    console = tmp_path / "console"
    console.write_text("boot messages\n")
    ssh_host_keys.write_console(str(console), ["-----BEGIN SSH HOST KEY KEYS-----", "k", "-----END"])
    assert console.read_text() == "boot messages\n-----BEGIN SSH HOST KEY KEYS-----\nk\n-----END\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="the reload is only asked for as root")
def test_sshd_reload_only_on_a_systemd_boot_of_slash(tmp_path, monkeypatch):
    # A systemctl that records its arguments; the module asks only for a queued, conditional reload.
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "Unit sshd.service not found." >&2\n'
                                       'exit 5\n')
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    booted = tmp_path / "run-systemd-system"
    monkeypatch.setattr(ssh_host_keys, "SYSTEMD_RUNNING", str(booted))
    slash, _ = make_context("module", "ssh-host-keys", {"part": "rest"}, root="/")
    other, _ = make_context("module", "ssh-host-keys", {"part": "rest"}, root=tmp_path)
    ssh_host_keys.reload_sshd(slash)  # systemd did not boot this machine: nothing
    booted.mkdir()
    ssh_host_keys.reload_sshd(other)  # a root other than /: nothing
    assert not calls.exists()
    ssh_host_keys.reload_sshd(slash)  # a failing systemctl is no failure of the node
    assert calls.read_text() == "try-reload-or-restart --no-block ssh.service sshd.service\n"


def test_console_only_for_slash(tmp_path, monkeypatch):
    console = tmp_path / "console"
    console.write_text("")
    monkeypatch.setattr(ssh_host_keys, "CONSOLE", str(console))
    slash, _ = make_context("module", "ssh-host-keys", {"part": "rest"}, root="/")
    other, _ = make_context("module", "ssh-host-keys", {"part": "rest"}, root=tmp_path)
    assert ssh_host_keys.console_path(slash) == str(console)
    assert ssh_host_keys.console_path(other) is None
    console.chmod(0o444)
    if os.geteuid() != 0:  # root writes anyway
        assert ssh_host_keys.console_path(slash) is None


def test_deletekeys(tmp_path):
    root = make_root(tmp_path)
    ssh = root / "etc/ssh"
    ssh.mkdir(parents=True)
    (ssh / "ssh_host_dsa_key").write_text("left by the image")
    (ssh / "ssh_host_rsa_key").write_text("an old rsa key")
    (ssh / "ssh_host_rsa_key-cert.pub").write_text("an old certificate")
    (ssh / "sshd_config").write_text("# kept\n")
    node(root, "login")
    # Default ssh_deletekeys: every old host key file goes, the config stays.
    assert sorted(p.name for p in ssh.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                                                      "sshd_config"]
    first = (ssh / "ssh_host_ed25519_key").read_bytes()
    # ssh_deletekeys false: what is there is kept (an image's own keys survive).
    (ssh / "ssh_host_rsa_key").write_text("an image rsa key")
    node(root, "login", {"ssh_deletekeys": False})
    assert (ssh / "ssh_host_ed25519_key").read_bytes() == first
    node(root, "rest", {"ssh_deletekeys": False})
    assert (ssh / "ssh_host_rsa_key").read_text() == "an image rsa key"
    assert host_keys(root) == ["ecdsa", "ed25519", "rsa"]
    # The rest node never deletes, whatever ssh_deletekeys says.
    node(root, "rest", {"ssh_deletekeys": True})
    assert (ssh / "ssh_host_ed25519_key").read_bytes() == first
    assert (ssh / "ssh_host_rsa_key").read_text() == "an image rsa key"
    # A new login run with ssh_deletekeys (a new instance) replaces them all.
    node(root, "login", {"ssh_deletekeys": True}, iid="iid-two")
    assert host_keys(root) == ["ed25519"]
    assert (ssh / "ssh_host_ed25519_key").read_bytes() != first


def test_half_made_key_from_a_killed_run_is_made_again(tmp_path):
    root = make_root(tmp_path)
    node(root, "login")
    ssh = root / "etc/ssh"
    # ssh-keygen killed mid-way: its temporary directory is there, no key under the real name.
    (ssh / ".cidag-keys-x1y2").mkdir()
    (ssh / ".cidag-keys-x1y2/ssh_host_rsa_key").write_text("half a key")
    node(root, "rest")
    assert_key(root, "rsa")
    assert not list(ssh.glob(".cidag-*"))


def shipped_args(tmp_path: Path, root: Path) -> tuple[list[str], dict]:
    """`cidag run` of the shipped modules.yaml on ROOT from a static source, and its environment."""
    src = tmp_path / "sources.yaml"
    src.write_text(textwrap.dedent("""\
        version: 1
        sources:
          - name: meta
            type: static
            capabilities: [instance-id, hostname, user-data]
            settings:
              data:
                instance-id: iid-shipped
                hostname: keys-test
                user-data: "#cloud-config\\nssh_genkeytypes: [ed25519, ecdsa, rsa]\\n"
        """))
    env = {"CIDAG_NETWORK_WAIT_ONLINE": "false", "CIDAG_SYSFS": str(tmp_path / "sys"),
           "CIDAG_CMDLINE": str(tmp_path / "cmdline")}
    (tmp_path / "cmdline").write_text("")
    return ["run", "--sources", str(src), "--modules", str(REPO / "modules.yaml"), "--root", str(root),
            "--record", str(tmp_path / "record.json")], env


def shipped_run(tmp_path: Path, root: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    args, env = shipped_args(tmp_path, root)
    proc = cidag(*args, *extra, env=env, timeout=180)
    return proc, json.loads((tmp_path / "record.json").read_text())


def by_name(record: dict) -> dict:
    return {n["id"]: n for n in record["nodes"]}


def test_shipped_manifests_login_key_first_then_the_rest(tmp_path):
    root = make_root(tmp_path)
    proc, record = shipped_run(tmp_path, root)
    nodes = by_name(record)
    login, rest = nodes["module:ssh-host-keys"], nodes["module:ssh-host-keys-rest"]
    assert login["status"] == "ok" and rest["status"] == "ok", (login, rest, proc.stderr)
    assert host_keys(root) == ["ecdsa", "ed25519", "rsa"]
    # The login node ended before the rest node started, and made only ed25519.
    assert login["end_s"] <= rest["start_s"], (login, rest)
    assert any(e["message"] == "making host keys: ed25519" for e in login["log"]), login["log"]
    making = next(e for e in rest["log"] if e["message"].startswith("making host keys:"))
    assert making["message"] == "making host keys: ecdsa, rsa"
    assert making["t"] >= login["log"][-1]["t"], (making, login["log"])  # log times: one clock
    messages = [e["message"] for e in rest["log"]]
    assert len(fingerprint_block(messages)) == 3
    assert "not a systemd boot of /: no sshd reload" in messages
    # the final message comes after all the keys; runcmd only after the login key (the
    # shipped manifests do not hold user commands back for the RSA key)
    final = nodes["module:final-message"]
    if final["start_s"] is not None:
        assert final["start_s"] >= rest["end_s"]
    runcmd = nodes["module:runcmd"]
    if runcmd["start_s"] is not None:
        assert runcmd["start_s"] >= login["end_s"]


def power_cut(root: Path) -> None:
    """SIGKILL every process whose command line names ROOT (cidag, and its ssh-keygens in their own
    process groups, or forked and not yet exec'd), until none is left: as a power cut would."""
    deadline = time.monotonic() + 10
    while True:
        found = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if str(root).encode() not in (proc / "cmdline").read_bytes():
                    continue
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # dead, not reaped yet
                os.kill(int(proc.name), signal.SIGKILL)
                found = True
            except (OSError, IndexError):
                continue
        if not found:
            return
        assert time.monotonic() < deadline, "processes survive SIGKILL"
        time.sleep(0.05)


def test_run_killed_between_the_two_nodes_ends_with_every_key(tmp_path):
    root = make_root(tmp_path)
    # A power cut right after the login node ended (its marker written): cidag and its ssh-keygens killed.
    args, env = shipped_args(tmp_path, root)
    run = subprocess.Popen([sys.executable, "-m", "cidag", *args], env=cli_env(env), start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = root / "var/lib/cidag/instances/iid-shipped/markers/ssh-host-keys.json"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert run.poll() is None and time.monotonic() < deadline, "the login node never ended"
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    power_cut(root)
    assert not (root / "var/lib/cidag/instances/iid-shipped/markers/ssh-host-keys-rest.json").exists()
    assert "rsa" not in host_keys(root) and "ed25519" in host_keys(root)
    first = (root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
    # Next boot, same instance: the login node is done (its marker), so nothing deletes its key
    # (ssh_deletekeys applies in the login node only); the rest node completes the set.
    proc, record = shipped_run(tmp_path, root)
    nodes = by_name(record)
    assert nodes["module:ssh-host-keys"]["status"] == "skipped", nodes["module:ssh-host-keys"]
    assert nodes["module:ssh-host-keys-rest"]["status"] == "ok", nodes["module:ssh-host-keys-rest"]
    assert host_keys(root) == ["ecdsa", "ed25519", "rsa"]
    for t in ("ecdsa", "ed25519", "rsa"):
        assert_key(root, t)
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == first
    assert not list((root / "etc/ssh").glob(".cidag-*"))
    # And the boot after that does neither (per instance): the keys stay.
    keys = {t: (root / f"etc/ssh/ssh_host_{t}_key").read_bytes() for t in host_keys(root)}
    proc, record = shipped_run(tmp_path, root)
    nodes = by_name(record)
    assert nodes["module:ssh-host-keys"]["status"] == nodes["module:ssh-host-keys-rest"]["status"] == "skipped"
    assert {t: (root / f"etc/ssh/ssh_host_{t}_key").read_bytes() for t in host_keys(root)} == keys
