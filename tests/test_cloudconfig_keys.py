"""Every top-level cloud-config key is applied by a module or reported in one line, by
`cidag check --user-data` and at run time; the doc's key table is generated and up to date."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cidag import cloudconfig_keys, userdata

REPO = Path(__file__).resolve().parent.parent


def cidag(*args: str) -> subprocess.CompletedProcess:
    """`python -m cidag ARGS` from this checkout, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CIDAG_CONFIG_DIR", None)
    return subprocess.run([sys.executable, "-m", "cidag", *args], capture_output=True, text=True, env=env, timeout=60)

EXAMPLES = sorted((REPO / "tests/data/cloud-init-examples").glob("cloud-config*.txt"))


def test_doc_table_is_up_to_date():
    res = subprocess.run([sys.executable, "-m", "cidag.cloudconfig_keys", "--check", str(REPO / "docs/modules.md")],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    doc = (REPO / "docs/modules.md").read_text()
    for key in cloudconfig_keys.CLOUD_INIT_KEYS:
        assert f"| `{key}` |" in doc, key


def test_new_modules_apply_their_keys():
    applied = cloudconfig_keys.applied()
    for key, owner in {"bootcmd": "bootcmd", "packages": "packages", "package_update": "packages",
                       "package_upgrade": "packages", "timezone": "timezone", "ntp": "ntp", "locale": "locale",
                       "mounts": "mounts", "swap": "mounts", "growpart": "growpart", "resize_rootfs": "resizefs",
                       "ca_certs": "ca-certs", "manage_etc_hosts": "hostname", "fqdn": "hostname",
                       "phone_home": "phone-home", "power_state": "power-state"}.items():
        assert applied.get(key) == owner, key
    # Every key a module applies is a cloud-init key: cidag invents no cloud-config.
    assert set(applied) <= set(cloudconfig_keys.CLOUD_INIT_KEYS)


def test_check_names_each_unsupported_key(tmp_path):
    ud = tmp_path / "user-data"
    ud.write_text("#cloud-config\napt: {preserve_sources_list: true}\npackges: [nginx]\nsnap: {commands: [ls]}\n"
                  "runcmd: [ls]\n")
    res = cidag("check", "--user-data", str(ud))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "is not supported" in ln]
    assert len(lines) == 3
    assert lines[0].startswith(f"{ud}:2:1: warning: cloud-config key 'apt' is not supported by cidag: ignored (write")
    assert f"{ud}:3:1:" in lines[1] and "not a cloud-init key either; did you mean 'packages'?" in lines[1]
    assert "'snap'" in lines[2]
    strict = cidag("check", "--strict", "--user-data", str(ud))
    assert strict.returncode != 0


def test_run_reports_unsupported_keys(tmp_path, manifests):
    ud = "#cloud-config\nyum_repos: {epel: {baseurl: 'http://x'}}\nruncmd: []\n"
    src, mods = manifests(f"""
        version: 1
        sources:
          - name: meta
            type: static
            capabilities: [instance-id, user-data]
            settings: {{data: {{instance-id: iid-1, user-data: {json.dumps(ud)}}}}}
        """, """
        version: 1
        modules:
          - name: user-data
            type: user-data
            wants: [user-data]
            provides: [cloud-config, user-scripts]
        """)
    record = tmp_path / "record.json"
    res = cidag("run", "--sources", src, "--modules", mods, "--root", str(tmp_path / "root"),
                "--state-dir", str(tmp_path / "state"), "--record", str(record))
    assert res.returncode == 0, res.stdout + res.stderr
    line = "cloud-config key 'yum_repos' is not supported by cidag: ignored"
    assert line in res.stderr and "runcmd" not in res.stderr
    node = next(n for n in json.loads(record.read_text())["nodes"] if n["id"] == "module:user-data")
    assert line in json.dumps(node)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_cloud_init_examples(example):
    """cloud-init's published examples: no traceback, every top-level key not applied is named."""
    res = cidag("check", "--user-data", str(example))
    out = res.stdout + res.stderr
    assert "Traceback" not in out and res.returncode in (0, 2), out
    parsed = userdata.parse(example.read_bytes())
    assert parsed.has_cloud_config or parsed.warnings, out
    for key in cloudconfig_keys.unsupported(parsed.cloud_config):
        assert f"cloud-config key {key!r} is not supported" in out, (key, out)
    for line in out.splitlines():  # every error is one line naming a key path, the file and a line
        if ": error" in line or ("unknown setting" in line):
            assert line.startswith(str(example)), line


def test_cloud_init_user_settings_are_reported_not_fatal(tmp_path, caplog):
    """A user written for cloud-init (ssh_import_id, lock-passwd...) is made; each setting cidag
    does not apply is one warning, at run time and from check; a typo stays an error."""
    from cidag.testing import make_context
    from modules_common import make_root, passwd

    users = [{"name": "ann", "ssh_import_id": ["gh:ann"], "lock-passwd": False, "shell": "/bin/bash"}]
    ctx, run = make_context("module", "users", {"default_user": None, "backend": "files"},
                            caps={"cloud-config": {"users": users}}, root=make_root(tmp_path))
    run(ctx)
    assert passwd(ctx.root)["ann"][6] == "/bin/bash"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "cloud-config users[0].ssh_import_id is not supported by cidag: ignored " \
           "(cidag fetches nothing named in user-data)" in warned
    assert "cloud-config users[0].lock-passwd is not supported by cidag: ignored (spelt lock_passwd in cidag)" in warned
    ud = tmp_path / "ud"
    ud.write_text("#cloud-config\nusers:\n  - name: ann\n    selinux_user: staff_u\n    shel: /bin/sh\n")
    diags = userdata.validate_user_data_file(ud)
    assert [(d.severity, d.line) for d in diags] == [("warning", 4), ("error", 5)]
    assert "users[0].selinux_user is not supported" in diags[0].message and "'shel'" in diags[1].message


def test_the_written_out_key_table_is_what_the_modules_declare():
    # user-data warns about unsupported keys from APPLIED without importing every module;
    # a module that gains or loses a CLOUD_CONFIG key must update it.
    from cidag.cloudconfig_keys import APPLIED, section_schemas

    assert APPLIED == {key: owner for key, (owner, _) in section_schemas().items()}
