"""`cidag clean` on a real temp root: the next `cidag run` there is a first boot again."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import conftest  # noqa: F401  (the suite's fixtures and path set-up)
from cidag import clean as cleanlib
from cidag import known_instance
from cidag.cli import main

UUID = "6b0e6d4c-2f4e-4c8e-9e38-1a2b3c4d5e6f"


def manifests(tmp_path: Path) -> tuple[Path, Path]:
    """A per-instance login module and a once module, each appending a line to a file in the root."""
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "version: 1\nsources:\n  - name: cd\n    type: static\n    capabilities: [instance-id]\n"
        "    settings: {data: {instance-id: i-1}}\n")
    modules = tmp_path / "modules.yaml"
    modules.write_text(
        "version: 1\nmodules:\n"
        "  - name: users\n    type: exec\n    needs: [instance-id]\n    frequency: per-instance\n"
        "    settings: {command: \"echo users >> $CIDAG_ROOT/ran\"}\n"
        "  - name: firstboot\n    type: exec\n    frequency: once\n"
        "    settings: {command: \"echo once >> $CIDAG_ROOT/ran\"}\n"
        "milestones:\n  login: [users]\n")
    return sources, modules


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sys/class/dmi/id").mkdir(parents=True)
    (root / "sys/class/dmi/id/product_uuid").write_text(UUID + "\n")
    return root


def cidag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cidag", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def run(root: Path, sources: Path, modules: Path) -> None:
    r = cidag("run", "--root", str(root), "--sources", str(sources), "--modules", str(modules), "--no-cache", "-q")
    assert r.returncode == 0, r.stderr


def test_after_clean_the_next_run_is_a_first_boot(tmp_path):
    root = make_root(tmp_path)
    sources, modules = manifests(tmp_path)
    run(root, sources, modules)
    run(root, sources, modules)  # a reboot: nothing per-instance or once runs again
    assert sorted((root / "ran").read_text().split()) == ["once", "users"]
    state = root / "var/lib/cidag"
    assert (state / known_instance.IDENTITY).exists() and (state / "last-run.json").exists()

    r = cidag("clean", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert "removed /var/lib/cidag/last-run.json" in r.stdout.splitlines()
    assert state.is_dir() and list(state.iterdir()) == []  # emptied, kept
    assert cidag("status", "--root", str(root)).returncode != 0  # "not run"

    run(root, sources, modules)
    assert sorted((root / "ran").read_text().split()) == ["once", "once", "users", "users"]


def test_options_remove_seed_host_keys_configs_and_reset_machine_id(tmp_path):
    root = make_root(tmp_path)
    seed = root / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True)
    (seed / "meta-data").write_text("instance-id: i-1\n")
    ssh = root / "etc/ssh"
    (ssh / "sshd_config.d").mkdir(parents=True)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config", "moduli"):
        (ssh / name).write_text("x\n")
    (ssh / "sshd_config.d/50-cidag-pwauth.conf").write_text("PasswordAuthentication no\n")
    net = root / "etc/systemd/network"
    net.mkdir(parents=True)
    for name in ("10-cidag-eth0.network", "10-cidag-eth0.link", "50-dhcp.network"):
        (net / name).write_text("[Match]\n")
    others = {"etc/netplan": ("50-cidag.yaml", "01-netcfg.yaml"),
              "etc/NetworkManager/system-connections": ("cidag-eth0.nmconnection", "Wired.nmconnection"),
              "etc/network/interfaces.d": ("50-cidag", "lo")}
    for directory, names in others.items():
        (root / directory).mkdir(parents=True)
        for name in names:
            (root / directory / name).write_text("x\n")
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "usr/lib/systemd/systemd").write_text("")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")

    # Without options none of them is touched.
    assert main(["clean", "--root", str(root), "-q"]) == 0
    assert (seed / "meta-data").exists() and (ssh / "ssh_host_ed25519_key").exists()
    assert (net / "10-cidag-eth0.network").exists()

    r = cidag("clean", "--root", str(root), "--logs", "--seed", "--host-keys", "--machine-id", "--configs", "all")
    assert r.returncode == 0, r.stderr
    assert not seed.exists() and (root / "var/lib/cloud/seed").is_dir()
    assert sorted(p.name for p in ssh.iterdir()) == ["moduli", "sshd_config", "sshd_config.d"]
    assert list((ssh / "sshd_config.d").iterdir()) == []
    assert sorted(p.name for p in net.iterdir()) == ["50-dhcp.network"]
    for directory, names in others.items():  # only what cidag wrote
        assert [p.name for p in (root / directory).iterdir()] == [names[1]]
    mid = root / "etc/machine-id"
    assert mid.read_text() == "uninitialized\n" and (mid.stat().st_mode & 0o777) == 0o444
    assert not (root / "var/lib/dbus/machine-id").exists()


def test_machine_id_removed_without_systemd_and_dbus_symlink_kept(tmp_path):
    root = make_root(tmp_path)
    (root / "etc").mkdir()
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    os.symlink("/etc/machine-id", root / "var/lib/dbus/machine-id")
    result = cleanlib.clean(root, machine_id=True)
    assert result.problems == [] and not (root / "etc/machine-id").exists()
    assert (root / "var/lib/dbus/machine-id").is_symlink()


def test_never_follows_a_symlink_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    (outside / "cidag").mkdir(parents=True)
    (outside / "cidag/keep").write_text("host's\n")
    (outside / "ssh").mkdir()
    (outside / "ssh/ssh_host_rsa_key").write_text("host's\n")
    (outside / "seed").mkdir()
    root = make_root(tmp_path)
    (root / "var/lib").mkdir(parents=True)
    os.symlink(outside / "cidag", root / "var/lib/cidag")  # the state dir leads out
    (root / "etc").mkdir()
    os.symlink(outside / "ssh", root / "etc/ssh")
    (root / "var/lib/cloud/seed").mkdir(parents=True)
    os.symlink(outside / "seed", root / "var/lib/cloud/seed/nocloud")
    r = cidag("clean", "--root", str(root), "--host-keys", "--seed")
    assert r.returncode == 1
    assert "/var/lib/cidag: not emptied" in r.stderr and "outside the root" in r.stderr
    assert (outside / "cidag/keep").exists() and (outside / "ssh/ssh_host_rsa_key").exists()
    assert (outside / "seed").is_dir()


def test_symlinks_inside_the_state_dir_are_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x\n")
    root = make_root(tmp_path)
    state = root / "var/lib/cidag"
    (state / "instances/i-1/markers").mkdir(parents=True)
    os.symlink(outside, state / "once")
    os.symlink(outside, state / "instances/i-1/markers/evil")
    assert cleanlib.clean(root).problems == []
    assert list(state.iterdir()) == [] and (outside / "precious").exists()


def test_refuses_while_a_run_is_in_progress(tmp_path):
    root = make_root(tmp_path)
    state = root / "var/lib/cidag"
    state.mkdir(parents=True)
    from cidag.state import process_identity, write_json

    write_json(state / "running.json", {"pid": os.getpid(), **process_identity(), "record": str(state / "runs/x.json")})
    r = cidag("clean", "--root", str(root))
    assert r.returncode == 2 and "in progress" in r.stderr and (state / "running.json").exists()


def test_reboot_only_for_this_machine_and_unknown_config_kind(tmp_path):
    root = make_root(tmp_path)
    r = cidag("clean", "--root", str(root), "--reboot")
    assert r.returncode == 2 and "--reboot" in r.stderr
    r = cidag("clean", "--root", str(root), "--configs", "bogus")
    assert r.returncode == 2 and "bogus" in r.stderr


def test_explicit_state_dir(tmp_path):
    root = make_root(tmp_path)
    state = tmp_path / "elsewhere"
    (state / "once").mkdir(parents=True)
    (state / "once/x.json").write_text("{}")
    assert main(["clean", "--root", str(root), "--state-dir", str(state), "-q"]) == 0
    assert state.is_dir() and list(state.iterdir()) == []
