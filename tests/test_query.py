"""`cidag query`: resolved metadata per capability; secrets only with --secrets and read access."""
from __future__ import annotations

import json
import os
import pathlib
import stat

import pytest

from cidag.cli import main
from record_factory import real_run


def cli(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return real_run(tmp_path_factory.mktemp("query"), sleep=0)


def test_files_and_modes(state):
    assert stat.S_IMODE(os.stat(state / "instance-data-sensitive.json").st_mode) == 0o600
    public = json.loads((state / "instance-data.json").read_text())
    assert public["capabilities"]["admin-password"]["value"] == "<secret>"


def test_all_capabilities_with_providers(state, capsys):
    rc, out, err = cli(capsys, "query", "--state-dir", str(state))
    assert rc == 0
    assert "instance-id: iid-test" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["hostname"] == ["hostname", "box1", "source:seed"]
    assert lines["admin-password"][1] == "<secret>"
    assert "hunter2" not in out
    assert "withheld" in err and "--secrets" in err


def test_one_value_raw_for_scripts(state, capsys):
    assert cli(capsys, "query", "hostname", "--state-dir", str(state))[:2] == (0, "box1\n")
    rc, out, _ = cli(capsys, "query", "public-keys", "--state-dir", str(state))
    assert json.loads(out) == ["ssh-ed25519 AAAA k1"]
    rc, out, _ = cli(capsys, "query", "hostname", "--format", "json", "--state-dir", str(state))
    assert json.loads(out) == {"name": "hostname", "provider": "source:seed", "value": "box1"}


def test_passwords_are_never_kept_even_for_secrets(state, capsys):
    rc, out, err = cli(capsys, "query", "admin-password", "--secrets", "--state-dir", str(state))
    assert (rc, out) == (1, "")  # no placeholder a script could take for the password
    assert err.startswith("admin-password: not kept: cidag writes no password to its state directory")
    assert "root may read" not in err
    assert "hunter2" not in (state / "instance-data-sensitive.json").read_text()
    rc, out, err = cli(capsys, "query", "--secrets", "--state-dir", str(state))
    assert rc == 0
    row = next(line.split() for line in out.splitlines() if line.split()[0] == "admin-password")
    assert row[1] == "<not kept>"[:len(row[1])] and "<secret>" not in out
    assert "admin-password: not kept" in err


def test_secrets_when_readable(tmp_path, capsys):
    """A secret a type declares (not a password) is kept 0600 and shown only with --secrets."""
    from cidag.engine import RunOptions, run
    from graphs import compile_text

    cg = compile_text({"version": 1, "sources": [{"name": "vault", "type": "plugins_for_tests:secret_probe",
                                                  "capabilities": ["instance-id", "api-token"],
                                                  "settings": {"token": "tok-123"}}]},
                      {"version": 1, "modules": [{"name": "m", "type": "exec", "needs": ["api-token"],
                                                  "settings": {"command": "true"}}]})
    run(cg, RunOptions(root=tmp_path, handle_signals=False))
    state = tmp_path / "var/lib/cidag"
    assert "tok-123" not in (state / "instance-data.json").read_text()
    rc, out, err = cli(capsys, "query", "api-token", "--secrets", "--state-dir", str(state))
    assert (rc, out, err) == (0, "tok-123\n", "")


def test_secrets_refused_without_read_access(state, capsys, monkeypatch):
    import cidag.state

    real = cidag.state.read_bytes

    def read_bytes(path, limit):
        if pathlib.Path(path).name == "instance-data-sensitive.json":
            raise PermissionError(13, "Permission denied")
        return real(path, limit)

    # As root (CI) a 0600 file is readable, so deny the read the way the kernel would for a user.
    monkeypatch.setattr(cidag.state, "read_bytes", read_bytes)
    rc, out, err = cli(capsys, "query", "--secrets", "--state-dir", str(state))
    assert rc == 2 and out == ""
    assert err.strip().endswith("permission denied: only root may read secrets (--secrets)")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads 0600 files")
def test_secrets_refused_for_a_user(state, capsys):
    rc, _, err = cli(capsys, "query", "--secrets", "--state-dir", str(state))
    assert rc == 2 and "only root may read secrets" in err


def test_unresolved_capability_exits_1(state, capsys):
    rc, out, err = cli(capsys, "query", "user-data", "--state-dir", str(state))
    assert rc == 1 and out == ""
    assert "capability 'user-data' was not resolved by the last run" in err


def test_no_state(tmp_path, capsys):
    rc, out, err = cli(capsys, "query", "--state-dir", str(tmp_path))
    assert rc == 2 and "no resolved metadata (has cidag run?" in err and "Traceback" not in err


def test_corrupt_file(tmp_path, capsys):
    (tmp_path / "instance-data.json").write_text("[1, 2")
    rc, _, err = cli(capsys, "query", "--state-dir", str(tmp_path))
    assert rc == 2 and "invalid JSON" in err and len(err.strip().splitlines()) == 1


def test_no_user_data_password_at_rest(tmp_path, manifests):
    """Passwords inside user-data (passwd, chpasswd users and list) reach neither instance-data
    file; the rest of the documents is kept for `query --secrets` (issue 15, item 6)."""
    from conftest import cidag

    user_data = ("#cloud-config\nhostname: pw-box\npassword: Top-Secret-1\n"
                 "users: [{name: bob, passwd: '$6$salt$Hash-Secret-2', lock_passwd: false}]\n"
                 "chpasswd: {expire: false, users: [{name: bob, password: Plain-Secret-3, type: text}],\n"
                 "           list: 'carol:List-Secret-4'}\n")
    s, m = manifests(f"""
    version: 1
    sources:
      - name: seed
        type: static
        capabilities: [instance-id, user-data]
        settings: {{data: {{instance-id: i-pw, user-data: {json.dumps(user_data)}}}}}
    """, """
    version: 1
    modules:
      - {name: user-data, type: user-data, wants: [user-data], provides: [cloud-config]}
      - {name: m, type: exec, wants: [cloud-config], settings: {command: "true"}}
    """)
    root = tmp_path / "root"
    proc = cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    state = root / "var/lib/cidag"
    for name in ("instance-data.json", "instance-data-sensitive.json"):
        text = (state / name).read_text()
        for secret in ("Top-Secret-1", "Hash-Secret-2", "Plain-Secret-3", "List-Secret-4"):
            assert secret not in text, (name, secret)
    sensitive = json.loads((state / "instance-data-sensitive.json").read_text())["capabilities"]
    assert sensitive["cloud-config"]["value"]["hostname"] == "pw-box"
    assert sensitive["cloud-config"]["value"]["chpasswd"]["users"][0]["name"] == "bob"
    assert "hostname: pw-box" in sensitive["user-data"]["value"]
