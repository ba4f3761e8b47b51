"""write-files, hostname, runcmd, scripts-user, final-message on a real target root."""
from __future__ import annotations

import base64
import gzip
import os
import stat
import time

import pytest

from cidag.testing import make_context
from modules_common import IS_ROOT, make_root, passwd


def write_files(root, entries, **settings):
    ctx, run = make_context("module", "write-files", settings, caps={"cloud-config": {"write_files": entries}},
                            root=root)
    return ctx, run(ctx)


def test_encodings_permissions_append(tmp_path):
    root = make_root(tmp_path)
    write_files(root, [
        {"path": "/etc/plain", "content": "plain\n"},
        {"path": "/etc/b64", "content": base64.b64encode(b"b64\n").decode(), "encoding": "b64", "permissions": "0600"},
        {"path": "/etc/gz", "content": gzip.compress(b"gz\n"), "encoding": "gzip", "permissions": 0o640},
        {"path": "/opt/app/deep/gzb64", "content": base64.b64encode(gzip.compress(b"gzb64\n")).decode(),
         "encoding": "gz+b64", "permissions": "755"},
        {"path": "/etc/plain", "content": "more\n", "append": True},
    ])
    assert (root / "etc/plain").read_text() == "plain\nmore\n"
    assert (root / "etc/b64").read_text() == "b64\n"
    assert (root / "etc/gz").read_text() == "gz\n"
    assert (root / "opt/app/deep/gzb64").read_text() == "gzb64\n"
    assert stat.S_IMODE((root / "etc/b64").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/gz").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "opt/app/deep/gzb64").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "etc/plain").stat().st_mode) == 0o644


def test_defer_split(tmp_path):
    root = make_root(tmp_path)
    entries = [{"path": "/now", "content": "1"}, {"path": "/later", "content": "2", "defer": True}]
    write_files(root, entries)
    assert (root / "now").exists() and not (root / "later").exists()
    write_files(root, entries, deferred=True)
    assert (root / "later").read_text() == "2"


def test_owner_from_target_root(tmp_path):
    root = make_root(tmp_path)
    ctx, run = make_context("module", "users", {"default_user": None},
                            caps={"cloud-config": {"users": [{"name": "app"}]}}, root=root)
    run(ctx)
    write_files(root, [{"path": "/srv/app.conf", "content": "x", "owner": "app:app"}])
    if IS_ROOT:
        st = (root / "srv/app.conf").stat()
        assert (st.st_uid, st.st_gid) == (int(passwd(root)["app"][2]), int(passwd(root)["app"][3]))


def test_unknown_owner_fails_that_entry_only(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(RuntimeError, match="1 of 2 file.*unknown user 'ghost'"):
        write_files(root, [{"path": "/a", "content": "a", "owner": "ghost"}, {"path": "/b", "content": "b"}])
    assert not (root / "a").exists() and (root / "b").read_text() == "b"


@pytest.mark.parametrize("path", ["/../escape", "/etc/../../escape", "relative/path"])
def test_traversal_refused(tmp_path, path):
    root = make_root(tmp_path)
    with pytest.raises(RuntimeError):
        write_files(root, [{"path": path, "content": "x"}])
    assert not (tmp_path / "escape").exists()


def test_symlink_escapes_refused(tmp_path):
    root = make_root(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    os.symlink(str(outside / "victim"), root / "etc/link")
    os.symlink(str(outside), root / "linkdir")
    with pytest.raises(RuntimeError, match="outside the root"):
        write_files(root, [{"path": "/etc/link", "content": "pwned"},
                           {"path": "/linkdir/new", "content": "pwned"},
                           {"path": "/linkdir/x", "content": "pwned", "append": True}])
    assert (outside / "victim").read_text() == "keep" and sorted(os.listdir(outside)) == ["victim"]


def test_huge_and_bad_content(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(RuntimeError, match="larger than 1000 bytes"):
        write_files(root, [{"path": "/big", "content": "x" * 1001}], max_size=1000)
    bomb = base64.b64encode(gzip.compress(b"\0" * 5000)).decode()
    with pytest.raises(RuntimeError, match="larger than"):
        write_files(root, [{"path": "/bomb", "content": bomb, "encoding": "gz+b64"}], max_size=1000)
    with pytest.raises(RuntimeError, match="octal"):
        write_files(root, [{"path": "/m", "content": "x", "permissions": "rwx"}])
    assert not (root / "big").exists() and not (root / "bomb").exists()


def test_bad_section_is_a_clear_failure(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(ValueError, match=r"write_files\[0\]: missing required setting 'path'"):
        write_files(root, [{"content": "x"}])


def test_hostname_and_hosts(tmp_path):
    root = make_root(tmp_path)
    ctx, run = make_context("module", "hostname", caps={"hostname": "web1.example.com",
                                                        "cloud-config": {"manage_etc_hosts": True}}, root=root)
    run(ctx)
    assert (root / "etc/hostname").read_text() == "web1\n"
    assert "127.0.1.1 web1.example.com web1" in (root / "etc/hosts").read_text()
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.0.0.1 db\n127.0.1.1 old\n")
    ctx, run = make_context("module", "hostname", caps={"cloud-config": {"hostname": "h2", "fqdn": "h2.lan",
                                                                        "manage_etc_hosts": "localhost",
                                                                        "prefer_fqdn_over_hostname": True}},
                            root=root)
    run(ctx)
    assert (root / "etc/hostname").read_text() == "h2.lan\n"
    assert (root / "etc/hosts").read_text() == "127.0.0.1 localhost\n10.0.0.1 db\n127.0.1.1 h2.lan h2\n"


def test_hostname_set_when_etc_hosts_cannot_be_kept(tmp_path):
    """`manage_etc_hosts: localhost` (the shipped manifest's) on a root whose /etc/hosts is a FIFO
    or a directory: the host name is still written, /etc/hosts is left as it is."""
    for kind in ("fifo", "dir"):
        root = make_root(tmp_path / kind)
        hosts = root / "etc/hosts"
        if hosts.exists():
            hosts.unlink()
        os.mkfifo(hosts) if kind == "fifo" else hosts.mkdir()
        ctx, run = make_context("module", "hostname", caps={"cloud-config": {"hostname": "web1",
                                                                            "manage_etc_hosts": "localhost"}},
                                root=root)
        run(ctx)
        assert (root / "etc/hostname").read_text() == "web1\n"
        assert stat.S_ISFIFO(hosts.lstat().st_mode) if kind == "fifo" else hosts.is_dir()


def test_hostname_invalid_and_missing(tmp_path):
    root = make_root(tmp_path)
    ctx, run = make_context("module", "hostname", caps={"hostname": "bad_name!"}, root=root)
    with pytest.raises(ValueError, match="invalid host name"):
        run(ctx)
    ctx, run = make_context("module", "hostname", root=root)
    assert run(ctx) is None and not (root / "etc/hostname").exists()
    ctx, run = make_context("module", "hostname", caps={"hostname": "x", "cloud-config": {"preserve_hostname": True}},
                            root=root)
    assert run(ctx) is None and not (root / "etc/hostname").exists()


def test_runcmd_env_output_and_failures(tmp_path):
    root = make_root(tmp_path)
    cc = {"runcmd": ["echo root=$CIDAG_ROOT iid=$CIDAG_INSTANCE_ID > \"$CIDAG_ROOT/ran\"",
                     ["sh", "-c", "echo argv-form; exit 3"],
                     "echo after-failure; test -z \"$CIDAG_CAP_CLOUD_CONFIG\" && echo no-cc"]}
    ctx, run = make_context("module", "runcmd", caps={"cloud-config": cc}, root=root, instance_id="i-1")
    ctx.env["CIDAG_CAP_CLOUD_CONFIG"] = "{...}"  # as the engine sets it; runcmd must not pass it on
    with pytest.raises(RuntimeError, match=r"1 of 3 command\(s\) failed: sh -c .*exit 3"):
        run(ctx)
    assert (root / "ran").read_text() == f"root={root} iid=i-1\n"
    text = "".join(ctx.output)
    assert "argv-form" in text and "after-failure" in text and "no-cc" in text


def test_runcmd_timeout_kills_group(tmp_path):
    root = make_root(tmp_path)
    cc = {"runcmd": ["sleep 30 & sleep 30; echo never", "echo not-reached"]}
    ctx, run = make_context("module", "runcmd", caps={"cloud-config": cc}, root=root, timeout=0.5)
    t = time.monotonic()
    with pytest.raises(RuntimeError, match="timeout"):
        run(ctx)
    assert time.monotonic() - t < 5
    assert "not-reached" not in "".join(ctx.output)


def test_runcmd_output_capped(tmp_path):
    root = make_root(tmp_path)
    ctx, run = make_context("module", "runcmd", caps={"cloud-config": {"runcmd": ["head -c 200000 /dev/zero | tr '\\0' x"]}},
                            root=root)
    run(ctx)
    text = "".join(ctx.output)
    assert len(text) < 70_000 and "dropped" in text


def test_scripts_user(tmp_path):
    root = make_root(tmp_path)
    scripts = [{"name": "000-a.sh", "content": b"#!/bin/sh\necho A > \"$CIDAG_ROOT/a\"\n"},
               {"name": "../../evil", "content": "#!/bin/sh\nexit 2\n"},
               {"name": "002-c.sh", "content": b"#!/bin/sh\necho C\n"}]
    state = tmp_path / "state"
    ctx, run = make_context("module", "scripts-user", caps={"user-scripts": scripts}, root=root, state_dir=state)
    with pytest.raises(RuntimeError, match=r"1 of 3 script\(s\) failed: _.._evil: exit 2"):
        run(ctx)
    assert (root / "a").read_text() == "A\n"
    assert "C" in "".join(ctx.output)
    assert stat.S_IMODE((state / "scripts").stat().st_mode) == 0o700
    assert not (tmp_path / "evil").exists()


def test_final_message(tmp_path):
    ctx, run = make_context("module", "final-message", root=tmp_path, instance_id="i-9")
    run(ctx)
    assert ctx.output[0].startswith("cidag finished: instance i-9, ") and "result unknown" in ctx.output[0]
    ctx, run = make_context("module", "final-message", root=tmp_path, instance_id="i-9",
                            caps={"cloud-config": {"final_message": "up $UPTIME s, $INSTANCE_ID done"}})
    run(ctx)
    assert ctx.output[0].endswith("i-9 done\n")


def test_hostname_with_newline_refused(tmp_path):
    root = make_root(tmp_path)
    ctx, run = make_context("module", "hostname", caps={"cloud-config": {"fqdn": "web\n.evil", "manage_etc_hosts": True}},
                            root=root)
    with pytest.raises(ValueError, match="invalid host name"):
        run(ctx)
