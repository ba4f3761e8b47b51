"""ssh-keys and set-password on a real target root; passwords never in logs, output or files."""
from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import warnings

import pytest

from cidag.modules import _crypto
from cidag.testing import make_context
from modules_common import IS_ROOT, KEY_ED, make_root, passwd, pwck_ok, rsa_key, shadow

SECRET = "Sup3r-Secret-Passw0rd"


def users(root, cc=None, **settings):
    ctx, run = make_context("module", "users", settings, caps={"cloud-config": cc or {}}, root=root)
    return run(ctx)


def everything_under(path) -> bytes:
    out = b""
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                with open(p, "rb") as fh:
                    out += fh.read()
    return out


def test_authorized_keys_for_default_and_named_users(tmp_path):
    root = make_root(tmp_path)
    users(root, {"users": ["default", {"name": "bob"}]})
    other = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob@x"
    cc = {"ssh_authorized_keys": ["ecdsa-sha2-nistp256 AAAAE2VjZHNh cc@x"],
          "users": ["default", {"name": "bob", "ssh_authorized_keys": [other]}]}
    caps = {"public-keys": {"mykey": KEY_ED}, "default-user": "cidag", "cloud-config": cc}
    for _ in range(2):  # twice: keys are merged, not duplicated
        ctx, run = make_context("module", "ssh-keys", caps=caps, root=root)
        run(ctx)
    ak = root / "home/cidag/.ssh/authorized_keys"
    assert ak.read_text().splitlines() == [KEY_ED, "ecdsa-sha2-nistp256 AAAAE2VjZHNh cc@x"]
    assert (root / "home/bob/.ssh/authorized_keys").read_text() == other + "\n"
    assert stat.S_IMODE(ak.stat().st_mode) == 0o600
    assert stat.S_IMODE(ak.parent.stat().st_mode) == 0o700
    if IS_ROOT:
        uid = int(passwd(root)["cidag"][2])
        assert ak.stat().st_uid == uid and ak.parent.stat().st_uid == uid


def test_existing_keys_kept_and_junk_ignored(tmp_path):
    root = make_root(tmp_path)
    users(root)
    ssh = root / "home/cidag/.ssh"
    ssh.mkdir(mode=0o755)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAAold old@x\n")
    ctx, run = make_context("module", "ssh-keys", caps={"public-keys": [KEY_ED, "not a key"],
                                                        "default-user": "cidag"}, root=root)
    run(ctx)
    assert (ssh / "authorized_keys").read_text().splitlines() == ["ssh-ed25519 AAAAold old@x", KEY_ED]
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700


def test_ssh_symlink_in_home_refused(tmp_path):
    root = make_root(tmp_path)
    users(root)
    (root / "elsewhere").mkdir()
    os.symlink("../../elsewhere", root / "home/cidag/.ssh")
    ctx, run = make_context("module", "ssh-keys", caps={"public-keys": [KEY_ED], "default-user": "cidag"}, root=root)
    run(ctx)  # root's disable_root entry is written; cidag's keys are that user's failure
    assert len(ctx.faults) == 1 and "symlink" in ctx.faults[0] and ctx.faults[0].startswith("cidag:")
    assert list((root / "elsewhere").iterdir()) == []


def test_unknown_user_fails_clearly(tmp_path):
    root = make_root(tmp_path)
    users(root, default_user=None)
    ctx, run = make_context("module", "ssh-keys", caps={"public-keys": [KEY_ED]},
                            settings={"user": "ghost"}, root=root)
    with pytest.raises(RuntimeError, match="user 'ghost' does not exist"):
        run(ctx)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_host_keys_made_per_instance_and_old_ones_replaced(tmp_path):
    root = make_root(tmp_path)
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/ssh_host_dsa_key").write_text("left by the image")
    ctx, run = make_context("module", "ssh-host-keys", root=root)
    run(ctx)
    assert not (root / "etc/ssh/ssh_host_dsa_key").exists()
    for t, prefix in (("rsa", "ssh-rsa "), ("ecdsa", "ecdsa-sha2-"), ("ed25519", "ssh-ed25519 ")):
        key = root / f"etc/ssh/ssh_host_{t}_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (root / f"etc/ssh/ssh_host_{t}_key.pub").read_text().startswith(prefix)
    first = (root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
    # ssh_deletekeys: false keeps what is there; ssh_genkeytypes picks the types.
    cc = {"ssh_deletekeys": False, "ssh_genkeytypes": ["ed25519"]}
    ctx, run = make_context("module", "ssh-host-keys", caps={"cloud-config": cc}, root=root)
    run(ctx)
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == first
    ctx, run = make_context("module", "ssh-host-keys", caps={"cloud-config": {"ssh_genkeytypes": ["ed25519"]}},
                            root=root)
    run(ctx)
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() != first
    assert not (root / "etc/ssh/ssh_host_rsa_key").exists()


def test_sha512_crypt_matches_system():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None
    for pw, salt, rounds in [("", "saltsalt", 5000), (SECRET, "abcdefghijklmnop", 5000), ("x" * 80, "s", 1000)]:
        mine = _crypto.sha512_crypt(pw, salt, rounds)
        if crypt is not None:
            head = "$6$" if rounds == 5000 else f"$6$rounds={rounds}$"
            assert mine == crypt.crypt(pw, head + salt)
    # Known vector from Drepper's specification.
    assert _crypto.sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
        "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1")


def test_pkcs1v15_roundtrip_with_openssl():
    pub, private = rsa_key()
    blob = _crypto.encrypt_for_key(SECRET, pub)
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    res = subprocess.run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(private),
                          "-pkeyopt", "rsa_padding_mode:pkcs1"],
                         input=base64.b64decode(blob), capture_output=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode() == SECRET
    with pytest.raises(ValueError):
        _crypto.encrypt_for_key(SECRET, KEY_ED)


def test_admin_password_hashed_posted_and_never_leaked(tmp_path, caplog):
    caplog.set_level("DEBUG")
    root = make_root(tmp_path)
    users(root)
    pub, private = rsa_key()
    posted = []
    caps = {"admin-password": SECRET, "post-password": posted.append, "public-keys": [KEY_ED, pub],
            "default-user": "cidag"}
    ctx, run = make_context("module", "set-password", caps=caps, root=root)
    run(ctx)
    field = shadow(root)["cidag"][1]
    assert field.startswith("$6$")
    assert _crypto.sha512_crypt(SECRET, field.split("$")[2]) == field
    assert len(posted) == 1 and SECRET not in posted[0]
    if shutil.which("openssl"):
        res = subprocess.run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(private)],
                             input=base64.b64decode(posted[0]), capture_output=True)
        assert res.stdout.decode() == SECRET
    assert SECRET not in caplog.text and SECRET not in "".join(ctx.output)
    assert SECRET.encode() not in everything_under(root)
    pwck_ok(root)


def test_random_password_without_rsa_key_is_not_posted(tmp_path, caplog):
    root = make_root(tmp_path)
    users(root)
    posted = []
    ctx, run = make_context("module", "set-password", {"random": True},
                            caps={"post-password": posted.append, "public-keys": [KEY_ED], "default-user": "cidag"},
                            root=root)
    run(ctx)
    assert shadow(root)["cidag"][1].startswith("$6$")
    assert posted == [] and "no ssh-rsa key" in caplog.text


def test_chpasswd_cloud_config(tmp_path, caplog):
    caplog.set_level("DEBUG")
    root = make_root(tmp_path)
    users(root, {"users": ["default", "bob", "carol", "dave"]})
    given_hash = _crypto.sha512_crypt("other", "abc")
    cc = {"password": SECRET,
          "chpasswd": {"expire": False, "users": [{"name": "bob", "password": SECRET + "2", "type": "text"},
                                                   {"name": "carol", "password": given_hash},
                                                   {"name": "dave", "type": "RANDOM"}]}}
    ctx, run = make_context("module", "set-password", caps={"cloud-config": cc, "default-user": "cidag"}, root=root)
    run(ctx)
    sh = shadow(root)
    assert sh["carol"][1] == given_hash
    for name in ("cidag", "bob", "dave"):
        assert sh[name][1].startswith("$6$")
    assert sh["bob"][2] != "0"
    assert SECRET not in caplog.text and SECRET.encode() not in everything_under(root)
    pwck_ok(root)


def test_chpasswd_expire_and_bad_hash(tmp_path):
    root = make_root(tmp_path)
    users(root, {"users": ["default", "bob"]})
    cc = {"chpasswd": {"list": "bob:" + SECRET}}
    ctx, run = make_context("module", "set-password", caps={"cloud-config": cc}, root=root)
    run(ctx)
    assert shadow(root)["bob"][2] == "0"  # cloud-init's default: expire, change at first login
    cc = {"chpasswd": {"users": [{"name": "bob", "password": "$1$md5$x", "type": "hash"}]}}
    ctx, run = make_context("module", "set-password", caps={"cloud-config": cc}, root=root)
    with pytest.raises(ValueError, match=r"not SHA-512") as info:
        run(ctx)
    assert "$1$" not in str(info.value)


def test_password_for_missing_user_fails_without_leaking(tmp_path, caplog):
    root = make_root(tmp_path)
    users(root, default_user=None)
    ctx, run = make_context("module", "set-password", {"user": "nobody-here"},
                            caps={"admin-password": SECRET}, root=root)
    with pytest.raises(RuntimeError, match="nobody-here") as info:
        run(ctx)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_post_failure_is_one_line_without_secret(tmp_path):
    root = make_root(tmp_path)
    users(root)
    pub, _ = rsa_key()

    def refuse(blob):
        raise ConnectionError("503 from metadata service")

    ctx, run = make_context("module", "set-password", caps={
        "admin-password": SECRET, "post-password": refuse, "public-keys": [pub], "default-user": "cidag"}, root=root)
    with pytest.raises(RuntimeError, match="posting the password failed: ConnectionError: 503") as info:
        run(ctx)
    assert SECRET not in str(info.value)
    assert shadow(root)["cidag"][1].startswith("$6$")  # set before the post


def test_hash_with_newline_cannot_inject_shadow_lines(tmp_path):
    root = make_root(tmp_path)
    users(root, {"users": ["default", "bob"]})
    evil = "$6$salt$abc\nroot::0:0:99999:7:::"
    cc = {"chpasswd": {"users": [{"name": "bob", "password": evil, "type": "hash"}]}}
    ctx, run = make_context("module", "set-password", caps={"cloud-config": cc}, root=root)
    with pytest.raises(ValueError):
        run(ctx)
    with pytest.raises(ValueError):
        users(root, {"users": [{"name": "eve", "passwd": "$6$s$h\n", "lock_passwd": False}]})
    assert [line.split(":")[0] for line in (root / "etc/shadow").read_text().splitlines()].count("root") == 1


def test_mistyped_chpasswd_line_does_not_echo(tmp_path, caplog):
    root = make_root(tmp_path)
    users(root)
    cc = {"chpasswd": {"list": f"{SECRET} cidag:x"}}
    ctx, run = make_context("module", "set-password", caps={"cloud-config": cc}, root=root)
    with pytest.raises(ValueError, match="invalid user name") as info:
        run(ctx)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_disable_root_gives_root_a_pointer_to_the_user(tmp_path):
    root = make_root(tmp_path)
    users(root)
    ctx, run = make_context("module", "ssh-keys", caps={"public-keys": [KEY_ED], "default-user": "cidag"}, root=root)
    run(ctx)
    line = (root / "root/.ssh/authorized_keys").read_text().strip()
    assert line.endswith(KEY_ED) and 'Please login as the user \\"cidag\\"' in line and "exit 142" in line
    other = tmp_path / "other"
    (other / "bin").mkdir(parents=True)
    users(other)
    ctx, run = make_context("module", "ssh-keys", caps={"public-keys": [KEY_ED], "default-user": "cidag",
                                                        "cloud-config": {"disable_root": False}}, root=other)
    run(ctx)
    assert not (other / "root/.ssh").exists()


def test_default_user_without_a_name_gives_keys_to_root(tmp_path):
    # A users module that made no default user still provides default-user, as True.
    root = make_root(tmp_path)
    users(root, {"users": [{"name": "bob"}]})
    caps = {"public-keys": [KEY_ED], "default-user": True, "cloud-config": {"users": [{"name": "bob"}]}}
    ctx, run = make_context("module", "ssh-keys", caps=caps, root=root)
    run(ctx)
    assert (root / "root/.ssh/authorized_keys").read_text().splitlines() == [KEY_ED]
