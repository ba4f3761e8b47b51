"""The shipped systemd units: ordering, the disable switches, and `systemd-analyze verify`."""
from __future__ import annotations

import shutil
import subprocess
from importlib import resources

import pytest

from cidag.cli import COMMANDS
from cidag.disabled import DISABLE_FILE

UNITS = ("cidag.service", "cidag-done.service", "cidag-login.target", "cidag.target")


def unit_text(name: str) -> str:
    return (resources.files("cidag") / "data" / name).read_text()


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat; space-separated lists are split)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).extend(value.split())
    return out


def test_service_order_and_switches():
    unit = parse(unit_text("cidag.service"))
    u, s = unit["Unit"], unit["Service"]
    # Not after the network managers: the login work runs while they start.
    assert "local-fs.target" in u["After"] and "network.target" not in u["After"]
    # Early, as cloud-init-local: not after sysinit/basic.target (DefaultDependencies=no), but
    # after /tmp is emptied and udev's coldplug is queued; and not Before=sysinit.target, which
    # would hold the whole boot until the login milestone. Stopped at shutdown all the same.
    assert u["DefaultDependencies"] == ["no"]
    assert {"systemd-tmpfiles-setup.service", "systemd-udev-trigger.service"} <= set(u["After"])
    assert not {"sysinit.target", "basic.target"} & set(u["After"] + u["Before"])
    assert u["Conflicts"] == ["shutdown.target"] and "shutdown.target" in u["Before"]
    for before in ("network-online.target", "cidag.target"):
        assert before in u["Before"]
    # Logins wait through cidag-login.target, which it pulls in (the generator may mask it).
    assert "sshd.service" not in u["Before"] and "cidag-login.target" in u["Wants"]
    login = parse(unit_text("cidag-login.target"))["Unit"]
    assert login["After"] == ["cidag.service"]
    for before in ("sshd.service", "ssh.service", "sshd-keygen.service", "systemd-user-sessions.service"):
        assert before in login["Before"]
    assert u["ConditionPathExists"] == ["!/" + DISABLE_FILE]
    assert u["ConditionKernelCommandLine"] == ["!cidag=disabled"]
    # started (READY=1) at the login milestone, which the shipped modules.yaml declares
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"] and s["RemainAfterExit"] == ["yes"]
    assert s["Environment"] == ["CIDAG_READY_MILESTONE=login"]
    exe, *args = s["ExecStart"]
    assert exe.startswith("/") and exe.endswith("/cidag") and args[0] in COMMANDS
    assert unit["Install"]["WantedBy"] == ["cidag.target"]
    assert "cidag-done.service" in u["Wants"]


def test_shipped_manifests_declare_the_ready_milestone():
    from cidag.engine import load_and_compile

    cg = load_and_compile()
    login = cg.manifests.milestones["login"]
    for needed in ("create-user", "ssh-keys", "ssh-host-keys", "set-password", "set-hostname"):
        assert needed in login
    for late in ("runcmd", "packages", "phone-home", "power-state", "scripts-user"):
        assert late not in login


def test_target_comes_after_the_whole_run():
    unit = parse(unit_text("cidag.target"))
    assert unit["Unit"]["Wants"] == ["cidag.service", "cidag-done.service"]
    assert "cidag-done.service" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    done = parse(unit_text("cidag-done.service"))
    assert "cidag.service" in done["Unit"]["After"] and "cidag.target" in done["Unit"]["Before"]
    exe, *args = done["Service"]["ExecStart"]
    assert exe.endswith("/cidag") and args == ["wait", "done"] and "wait" in COMMANDS
    assert done["Unit"]["ConditionPathExists"] == ["!/" + DISABLE_FILE]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_clean(tmp_path):
    stub = tmp_path / "cidag"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in UNITS:
        text = unit_text(name).replace("/usr/bin/cidag", str(stub))  # verify checks the binary exists
        (tmp_path / name).write_text(text)
    # a unit that orders itself after provisioning, as docs/systemd.md tells users to
    (tmp_path / "after-cidag.service").write_text(
        "[Unit]\nDescription=after provisioning\nWants=cidag.target\nAfter=cidag.target\n\n"
        "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    files = [str(tmp_path / n) for n in (*UNITS, "after-cidag.service")]
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *files],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""
