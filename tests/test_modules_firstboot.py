"""End to end: a first boot from a NoCloud seed directory into a temp root, through `cidag run`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

from modules_common import KEY_ED, make_root, passwd, pwck_ok, shadow

REPO = Path(__file__).resolve().parent.parent
ADMIN_PW = "Adm1n-Pa55-for-e2e"
BOB_PW = "b0b-Clear-Text-Pw"

CLOUD_CONFIG = f"""\
#cloud-config
manage_etc_hosts: true
users:
  - default
  - name: bob
    groups: [devs]
    shell: /bin/bash
    sudo: "ALL=(ALL) ALL"
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBobBobBob bob@laptop"]
chpasswd:
  expire: false
  users: [{{name: bob, password: {BOB_PW}, type: text}}]
write_files:
  - path: /etc/app/app.conf
    content: "listen=8080\\n"
    permissions: "0640"
  - path: /home/bob/notes.txt
    content: "hello bob\\n"
    owner: bob:bob
    defer: true
runcmd:
  - echo "runcmd $CIDAG_INSTANCE_ID" >> "$CIDAG_ROOT/var/log/runcmd.log"
"""
SCRIPT = '#!/bin/sh\necho "script $CIDAG_INSTANCE_ID" >> "$CIDAG_ROOT/var/log/script.log"\n'


def seed(tmp_path: Path, iid: str) -> Path:
    d = tmp_path / "seed"
    d.mkdir(exist_ok=True)
    (d / "meta-data").write_text(f"instance-id: {iid}\nlocal-hostname: web1.example.com\npublic-keys: ['{KEY_ED}']\n")
    msg = MIMEMultipart()
    msg.attach(MIMEText(CLOUD_CONFIG, "cloud-config"))
    msg.attach(MIMEText(SCRIPT, "x-shellscript"))
    (d / "user-data").write_bytes(msg.as_bytes())
    return d


def sources(tmp_path: Path, seed_dir: Path) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(textwrap.dedent(f"""\
        version: 1
        sources:
          - name: nocloud
            type: nocloud
            capabilities: [instance-id, hostname, public-keys, user-data, vendor-data, network-config]
            timeout: 10s
            settings: {{path: "{seed_dir}", label: no-such-label-cidag-test}}
          - name: platform
            type: static
            capabilities: [admin-password, post-password]
            settings: {{data: {{admin-password: {ADMIN_PW}}}}}
        """))
    return p


def run(root: Path, src: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("CIDAG_CONFIG_DIR", None)
    res = subprocess.run([sys.executable, "-m", "cidag", "run", "--root", str(root), "--sources", str(src),
                          "--modules", str(REPO / "modules.yaml"), "-j", "4"],
                         capture_output=True, text=True, env=env, timeout=120)
    record = json.loads((root / "var/lib/cidag/last-run.json").read_text())
    return res, record


def statuses(record: dict) -> dict[str, str]:
    return {n["name"]: n["status"] for n in record["nodes"] if n["kind"] == "module"}


def test_first_boot_then_same_and_new_instance(tmp_path):
    root = make_root(tmp_path)
    (root / "var/log").mkdir(parents=True)
    src = sources(tmp_path, seed(tmp_path, "iid-one"))

    res, record = run(root, src)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(statuses(record).values()) == {"ok"}, statuses(record)
    final = next(n for n in record["nodes"] if n["name"] == "final-message")
    assert "instance iid-one" in final["output"] and "result ok" in final["output"], final["output"]
    pw, sh = passwd(root), shadow(root)
    assert {"cidag", "bob"} <= set(pw)
    assert (root / "etc/hostname").read_text() == "web1\n"
    assert "web1.example.com web1" in (root / "etc/hosts").read_text()
    assert KEY_ED in (root / "home/cidag/.ssh/authorized_keys").read_text()
    assert "bob@laptop" in (root / "home/bob/.ssh/authorized_keys").read_text()
    assert sh["cidag"][1].startswith("$6$") and sh["bob"][1].startswith("$6$")
    assert (root / "etc/app/app.conf").read_text() == "listen=8080\n"
    assert (root / "home/bob/notes.txt").read_text() == "hello bob\n"
    assert "bob ALL=(ALL) ALL" in (root / "etc/sudoers.d/90-cidag-users").read_text()
    assert (root / "var/log/runcmd.log").read_text() == "runcmd iid-one\n"
    assert (root / "var/log/script.log").read_text() == "script iid-one\n"
    if os.geteuid() == 0:
        st = (root / "home/bob/notes.txt").stat()
        assert (st.st_uid, st.st_gid) == (int(pw["bob"][2]), int(pw["bob"][3]))
    pwck_ok(root)

    # Same instance: per-instance modules do nothing.
    res, record = run(root, src)
    assert res.returncode == 0, res.stdout + res.stderr
    st = statuses(record)
    assert st["final-message"] == "ok" and st["user-data"] == "ok"
    for name in ("create-user", "ssh-keys", "set-password", "write-files", "runcmd", "scripts-user"):
        assert st[name] == "skipped", (name, st[name])
    assert (root / "var/log/runcmd.log").read_text() == "runcmd iid-one\n"

    # New instance: everything again, no duplicated user.
    seed(tmp_path, "iid-two")
    res, record = run(root, src)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(statuses(record).values()) == {"ok"}
    assert (root / "var/log/runcmd.log").read_text() == "runcmd iid-one\nruncmd iid-two\n"
    names = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
    assert sorted(names) == sorted(set(names))
    assert (root / "home/bob/.ssh/authorized_keys").read_text().count("bob@laptop") == 1
    pwck_ok(root)

    # Clear-text passwords: not in the output, the records, the target's files or the state dir
    # (except instance-data-sensitive.json, the 0600 file `query --secrets` reads by design).
    assert ADMIN_PW not in res.stdout + res.stderr and BOB_PW not in res.stdout + res.stderr
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            if p.name == "instance-data-sensitive.json" or p.is_symlink():
                continue
            data = p.read_bytes()
            assert ADMIN_PW.encode() not in data, p
            assert BOB_PW.encode() not in data, p


def static_sources(tmp_path: Path, user_data: str) -> Path:
    p = tmp_path / "static-sources.yaml"
    p.write_text(textwrap.dedent("""\
        version: 1
        sources:
          - name: meta
            type: static
            capabilities: [instance-id, hostname, public-keys, user-data, vendor-data, network-config,
                           admin-password, post-password]
            settings:
              data:
                instance-id: iid-bad
                hostname: bad-ud
        """) + f"        user-data: {json.dumps(user_data)}\n")
    return p


def test_broken_user_data_does_not_stop_the_boot(tmp_path):
    root = make_root(tmp_path)
    res, record = run(root, static_sources(tmp_path, "#cloud-config\nruncmd: [\n  - oops\n"))
    st = statuses(record)
    assert res.returncode == 1 and st["user-data"] == "failed"
    reason = next(n["reason"] for n in record["nodes"] if n["name"] == "user-data")
    assert "invalid YAML" in reason and "line" in reason
    for name in ("create-user", "set-hostname", "ssh-keys", "write-files", "runcmd", "final-message"):
        assert st[name] == "ok", (name, st[name])
    assert "cidag" in passwd(root) and (root / "etc/hostname").read_text() == "bad-ud\n"


def test_bad_section_fails_only_its_module(tmp_path):
    root = make_root(tmp_path)
    ud = "#cloud-config\nusers: [{name: x, shel: /bin/sh}]\nwrite_files: [{path: /etc/ok, content: fine}]\n"
    res, record = run(root, static_sources(tmp_path, ud))
    st = statuses(record)
    assert res.returncode == 1
    assert st["create-user"] == "failed" and st["ssh-keys"] == "skipped"
    reason = next(n["reason"] for n in record["nodes"] if n["name"] == "create-user")
    assert "users[0].shel: unknown setting 'shel'" in reason
    assert st["write-files"] == "ok" and st["set-hostname"] == "ok" and st["runcmd"] == "ok"
    assert (root / "etc/ok").read_text() == "fine"
    final = next(n for n in record["nodes"] if n["name"] == "final-message")
    assert "result failed" in final["output"]


def test_one_bad_user_locks_nobody_else_out(tmp_path):
    """Issue 15 item 1: bob's plaintext passwd is bob's failure; carol and the default user
    get their keys, the metadata admin password is set, the run is degraded, not failed."""
    root = make_root(tmp_path)
    carol_key = KEY_ED.replace("AAAA", "AAAB", 1) if "AAAA" in KEY_ED else KEY_ED
    ud = ("#cloud-config\n" + json.dumps({
        "users": ["default", {"name": "bob", "passwd": "plaintext-pw"},
                  {"name": "carol", "ssh_authorized_keys": [carol_key]}]}) + "\n")
    src = static_sources(tmp_path, ud)
    src.write_text(src.read_text().replace("hostname: bad-ud", f"hostname: bad-ud\n        public-keys: ['{KEY_ED}']"
                                           "\n        admin-password: Adm1n-Secret"))
    res, record = run(root, src)
    st = statuses(record)
    assert res.returncode == 0, res.stderr
    assert record["result"] == "degraded"
    for name in ("create-user", "ssh-keys", "set-password", "chpasswd"):
        assert st[name] == "ok", (name, st[name], record)
    users = passwd(root)
    assert "cidag" in users and "carol" in users and "bob" not in users
    assert carol_key in (root / "home/carol/.ssh/authorized_keys").read_text()
    assert KEY_ED in (root / "home/cidag/.ssh/authorized_keys").read_text()
    assert not (root / "etc/shadow").read_text().count("cidag:!:")  # the admin password was set
    assert any("bob" in f and "passwd must be" in f for f in record["faults"])
    assert "plaintext-pw" not in json.dumps(record)


STOCK_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\n"


def test_shipped_manifest_makes_the_host_name_resolve_without_dns(tmp_path):
    """The cloud-config says nothing of /etc/hosts: the name cidag sets still resolves from
    /etc/hosts (else sudo asks DNS, 20 s a sudo where DNS does not answer); the image's own lines
    stay. `manage_etc_hosts: false` leaves the file as it was."""
    for manage, expect_line in (("", True), ("manage_etc_hosts: false\n", False)):
        case = tmp_path / (manage.split(":")[0] or "unset")
        root = make_root(case)
        (root / "etc/hosts").write_text(STOCK_HOSTS)
        d = case / "seed"
        d.mkdir()
        (d / "meta-data").write_text("instance-id: iid-hosts\nlocal-hostname: web1.example.com\n")
        (d / "user-data").write_text("#cloud-config\n" + manage)
        res, record = run(root, sources(case, d))
        assert res.returncode == 0, res.stdout + res.stderr
        hosts = (root / "etc/hosts").read_text()
        if expect_line:
            assert hosts.splitlines()[0] == "127.0.1.1 web1.example.com web1", hosts
            assert hosts.splitlines()[1:] == STOCK_HOSTS.splitlines(), hosts
        else:
            assert hosts == STOCK_HOSTS
