"""users module on a real target root: files as pwck/grpck read them; both backends."""
from __future__ import annotations

import os
import shutil
import stat
import threading

import pytest

from cidag.modules import _accounts as acc
from cidag.testing import make_context
from modules_common import IS_ROOT, group, make_root, passwd, pwck_ok, shadow

BACKENDS = ["files"] + (["tools"] if IS_ROOT and shutil.which("useradd") else [])
CC = {
    "users": ["default",
              {"name": "bob", "groups": "docker, wheel", "shell": "/bin/bash", "sudo": ["ALL=(ALL) ALL"],
               "gecos": "Bob B"},
              {"name": "svc", "system": True, "no_create_home": True}],
    "groups": [{"admins": ["bob", "ghost"]}, "empty"],
}


def run_users(root, cc, **settings):
    ctx, run = make_context("module", "users", settings, caps={"cloud-config": cc}, root=root)
    return run(ctx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_users_groups_homes_sudo(tmp_path, backend):
    root = make_root(tmp_path)
    out = run_users(root, CC, backend=backend)
    assert out == {"default-user": "cidag"}
    pw, sh, gr = passwd(root), shadow(root), group(root)
    assert set(pw) == {"root", "cidag", "bob", "svc"}
    assert pw["bob"][4] == "Bob B" and pw["bob"][6] == "/bin/bash" and pw["bob"][5] == "/home/bob"
    assert int(pw["svc"][2]) < 1000 <= int(pw["bob"][2])
    assert sh["bob"][1].startswith("!")  # lock_passwd defaults to true
    assert "bob" in gr["docker"][3].split(",") and "bob" in gr["admins"][3].split(",")
    assert "ghost" not in gr["admins"][3]
    assert "cidag" in gr["sudo"][3].split(",")
    assert "empty" in gr
    home = root / "home/bob"
    st = home.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert (home / ".profile").read_text() == "# profile\n"
    if IS_ROOT:
        assert st.st_uid == int(pw["bob"][2]) and st.st_gid == int(pw["bob"][3])
        assert (home / ".profile").stat().st_uid == int(pw["bob"][2])
    assert not (root / "home/svc").exists()
    sudo = root / "etc/sudoers.d/90-cidag-users"
    assert "bob ALL=(ALL) ALL" in sudo.read_text() and "cidag ALL=(ALL) NOPASSWD:ALL" in sudo.read_text()
    assert stat.S_IMODE(sudo.stat().st_mode) == 0o440
    assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) in (0o640, 0o600)
    pwck_ok(root)


@pytest.mark.parametrize("backend", BACKENDS)
def test_existing_user_updated_not_duplicated(tmp_path, backend):
    root = make_root(tmp_path)
    run_users(root, CC, backend=backend)
    before = passwd(root)
    cc2 = {"users": [{"name": "bob", "groups": ["extra"], "shell": "/bin/sh"}]}
    run_users(root, cc2, backend=backend)
    run_users(root, cc2, backend=backend)
    lines = (root / "etc/passwd").read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines].count("bob") == 1
    assert passwd(root)["bob"][2] == before["bob"][2]
    assert passwd(root)["bob"][6] == "/bin/sh"
    gr = group(root)
    assert "bob" in gr["extra"][3].split(",") and "bob" in gr["docker"][3].split(",")
    assert (root / "etc/sudoers.d/90-cidag-users").read_text().count("bob ALL") == 1
    pwck_ok(root)


def test_existing_database_kept(tmp_path):
    root = make_root(tmp_path)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n# comment\nold:x:1500:1500::/home/old:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nold:x:1500:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nold:$6$x$y:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nold:!::\n")
    (root / "etc/shadow").chmod(0o600)
    run_users(root, {"users": [{"name": "new", "lock_passwd": False}]}, default_user=None)
    pw = passwd(root)
    assert pw["new"][2] == "1501" and "# comment" in (root / "etc/passwd").read_text()
    assert shadow(root)["old"][1] == "$6$x$y"
    assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) == 0o600
    assert (root / "etc/passwd-").exists()  # the backup the shadow tools leave


def test_passwd_hash_and_lock(tmp_path):
    root = make_root(tmp_path)
    h = "$6$saltsalt$" + "a" * 86
    run_users(root, {"users": [{"name": "u1", "passwd": h, "lock_passwd": False},
                               {"name": "u2", "hashed_passwd": h}]}, default_user=None, backend="files")
    sh = shadow(root)
    assert sh["u1"][1] == h and sh["u2"][1] == "!" + h
    # a bad hash fails that user alone (issue 15 item 1): the next one is made
    ctx, run = make_context("module", "users", {"default_user": None},
                            caps={"cloud-config": {"users": [{"name": "u3", "passwd": "$1$md5$abc", "lock_passwd": False},
                                                             {"name": "u4"}]}}, root=root)
    run(ctx)
    assert "u3" not in passwd(root) and "u4" in passwd(root)
    assert len(ctx.faults) == 1 and "u3" in ctx.faults[0] and "SHA-512" in ctx.faults[0]
    assert "$1$md5$abc" not in ctx.faults[0]


def test_bad_sections_fail_with_clear_reason(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(ValueError, match=r"users\[0\]\.shel: unknown setting 'shel' \(did you mean 'shell'\?\)"):
        run_users(root, {"users": [{"name": "x", "shel": "/bin/sh"}]}, default_user=None)
    with pytest.raises(ValueError, match="does not match"):
        run_users(root, {"users": [{"name": "Bad:Name"}]}, default_user=None)
    with pytest.raises(ValueError, match="groups"):
        run_users(root, {"groups": [3]})
    assert not (root / "etc/passwd").exists() or "x:" not in (root / "etc/passwd").read_text()


def test_no_default_user_and_nothing_to_do(tmp_path):
    root = make_root(tmp_path)
    assert run_users(root, {"users": []}) is None
    assert run_users(root, {}, default_user=None) is None


def test_user_override_of_default(tmp_path):
    root = make_root(tmp_path)
    out = run_users(root, {"user": {"name": "admin", "shell": "/bin/sh"}})
    assert out == {"default-user": "admin"}
    assert passwd(root)["admin"][6] == "/bin/sh"


def test_home_symlink_escape_refused(tmp_path):
    root = make_root(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "home")
    with pytest.raises(Exception, match="outside the root"):
        run_users(root, {"users": [{"name": "eve"}]}, default_user=None, backend="files")
    assert list(outside.iterdir()) == []


def test_concurrent_edits_serialised_by_lock(tmp_path):
    root = make_root(tmp_path)
    errors = []

    def one(i):
        try:
            run_users(root, {"users": [{"name": f"user{i}"}]}, default_user=None, backend="files")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    pw = passwd(root)
    assert {f"user{i}" for i in range(6)} <= set(pw)
    assert len({pw[f"user{i}"][2] for i in range(6)}) == 6
    assert [p.name for p in (root / "etc").glob("*.lock")] == [".pwd.lock"]  # lckpwdf keeps its file
    pwck_ok(root)


def test_owner_lookup_in_target_not_host(tmp_path):
    root = make_root(tmp_path)
    run_users(root, {"users": [{"name": "bob"}]}, default_user=None)
    db = acc.Database(root)
    uid, gid = acc.resolve_owner(db, "bob:bob")
    assert uid == int(passwd(root)["bob"][2])
    with pytest.raises(ValueError, match="unknown user 'nobody'"):
        acc.resolve_owner(db, "nobody")


def test_sudo_rules_rejected_by_visudo_are_not_installed(tmp_path, monkeypatch):
    root = make_root(tmp_path)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "visudo").write_text("#!/bin/sh\necho \"$2: syntax error near line 3\"; exit 1\n")
    (fake / "visudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="rejected by visudo"):
        run_users(root, {"users": [{"name": "bob", "sudo": "ALL=(ALL) ALL"}]}, default_user=None, backend="files")
    assert not (root / "etc/sudoers.d/90-cidag-users").exists()
    assert not list((root / "etc/sudoers.d").iterdir())


def test_uid_collision_refused(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(ValueError, match="uid 0 is already used"):
        run_users(root, {"users": [{"name": "toor", "uid": 0}]}, default_user=None, backend="files")


@pytest.mark.parametrize("user", [
    {"name": "u", "groups": ["evil:x:0:"]},
    {"name": "bob\n"},
    {"name": "u", "groups": "a,b\nroot::0:0::/:/bin/sh"},
    {"name": "u", "primary_group": "x:0"},
    {"name": "u", "homedir": "/home/../../etc"},
    {"name": "u", "homedir": "relative"},
    {"name": "u", "shell": "/bin/sh\nroot"},
    {"name": "u", "gecos": "a:b"},
    {"name": "u", "uid": "12a"},
])
def test_injection_into_account_files_refused(tmp_path, user):
    root = make_root(tmp_path)
    with pytest.raises(ValueError):
        run_users(root, {"users": [user]}, default_user=None)
    assert not (root / "etc/passwd").exists()


def test_group_member_injection_refused(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(ValueError, match="invalid member"):
        run_users(root, {"groups": [{"g": ["ok", "bad:name"]}]}, default_user=None)


def test_thousands_of_users_in_one_write(tmp_path):
    """Issue 15 item 2: the account files are written once per run, whatever the number of
    users (useradd rewrote them once per user: 5,000 users hit the 2-minute timeout)."""
    root = make_root(tmp_path)
    n = 2000
    ctx, run = make_context("module", "users", {}, caps={"cloud-config": {
        "users": ["default"] + [{"name": f"u{i}"} for i in range(n)]}}, root=root)
    run(ctx)
    pw = passwd(root)
    assert len([u for u in pw if u.startswith("u")]) == n and "cidag" in pw
    uids = [int(pw[f"u{i}"][2]) for i in range(n)]
    assert len(set(uids)) == n and uids == sorted(uids)  # useradd's order: max used + 1
    assert all((root / f"home/u{i}").is_dir() for i in (0, n - 1))
    pwck_ok(root)


# -- subordinate ids: what useradd gives a new user, the files backend gives too

def _subids(root, fname):
    return [line.split(":") for line in (root / "etc" / fname).read_text().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_users_get_subordinate_ids_as_useradd_gives_them(tmp_path, backend):
    root = make_root(tmp_path)
    for fname in ("subuid", "subgid"):
        (root / "etc" / fname).write_text("")
    run_users(root, CC, backend=backend)
    for fname in ("subuid", "subgid"):
        # users in file order (default user first); the system user gets none
        assert _subids(root, fname) == [["cidag", "100000", "65536"], ["bob", "165536", "65536"]], backend
    run_users(root, CC, backend=backend)  # a second run adds nothing
    assert len(_subids(root, "subuid")) == 2


@pytest.mark.skipif(not ("tools" in BACKENDS), reason="needs root and useradd")
def test_files_backend_takes_the_range_useradd_would_take(tmp_path):
    """Ranges already taken, with a gap too small and one big enough: both backends pick the same."""
    taken = "old1:100000:65536\nold2:200000:65536\nold3:310000:65536\n"
    got = {}
    for backend in ("files", "tools"):
        root = make_root(tmp_path / backend)
        (root / "etc/login.defs").write_text("SUB_UID_COUNT 40000\nSUB_GID_COUNT 0\n")
        (root / "etc/subuid").write_text(taken)
        (root / "etc/subgid").write_text("")
        run_users(root, {"users": [{"name": "ann"}, {"name": "ben"}]}, default_user=None, backend=backend)
        # the order of lines differs (useradd keeps them sorted by start); readers do not care
        got[backend] = (sorted((root / "etc/subuid").read_text().splitlines()), (root / "etc/subgid").read_text())
    assert got["files"] == got["tools"]
    assert got["files"][0] == sorted(taken.splitlines() + ["ann:265536:40000", "ben:375536:40000"])
    assert got["files"][1] == ""  # SUB_GID_COUNT 0: none


def test_no_subuid_file_none_made(tmp_path):
    root = make_root(tmp_path)
    run_users(root, CC, backend="files")
    assert not (root / "etc/subuid").exists() and not (root / "etc/subgid").exists()


@pytest.mark.parametrize("subuid, defs", [
    ("full:100000:600000001\n", ""),                      # no range left
    ("", "SUB_UID_COUNT lots\n"),                        # login.defs not a number
])
def test_subordinate_ids_that_cannot_be_given_are_one_fault_not_a_failed_module(tmp_path, subuid, defs):
    """The users are made (and the modules after create-user go on); the subordinate ids are
    one fault in the record, as a failed item is."""
    root = make_root(tmp_path)
    (root / "etc/subuid").write_text(subuid)
    (root / "etc/subgid").write_text("")
    (root / "etc/login.defs").write_text(defs)
    ctx, run = make_context("module", "users", {"backend": "files"}, caps={"cloud-config": CC}, root=root)
    assert run(ctx) == {"default-user": "cidag"}
    assert "bob" in passwd(root)
    assert len(ctx.faults) == 1 and "subordinate ids" in ctx.faults[0], ctx.faults
    assert "\n" not in ctx.faults[0]


def test_a_fifo_at_subuid_never_hangs_and_is_one_fault(tmp_path):
    root = make_root(tmp_path)
    os.mkfifo(root / "etc/subuid")
    (root / "etc/subgid").write_text("")
    ctx, run = make_context("module", "users", {"backend": "files"}, caps={"cloud-config": CC}, root=root)
    assert run(ctx) == {"default-user": "cidag"}
    assert len(ctx.faults) == 1 and "is not a regular file" in ctx.faults[0], ctx.faults
