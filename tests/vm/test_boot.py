"""Real boots: a Debian bookworm guest under QEMU, provisioned by cidag's own units.

Everything is checked from the host: the report unit (ordered after
cidag.target) writes `cidag status --wait` to a serial port, and ssh logs in
with the keys the metadata and the cloud-config gave.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import warnings

import pytest

import guest_image
import machine
from conftest import seed_iso, write_fixture

PASSWORD = "vm-Test-passw0rd"


def user_data(hostname: str, key_user: str, default: bool = True, host_keys: tuple | None = None) -> str:
    users = (["default"] if default else []) + [{
        "name": "alice", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "ssh_authorized_keys": [key_user],
    }]
    doc = {
        "hostname": hostname,
        "users": users,
        "chpasswd": {"expire": False, "users": [{"name": "alice", "password": PASSWORD, "type": "text"}]},
        "write_files": [{"path": "/etc/vm-test/hello", "content": "hello from user-data\n",
                         "permissions": "0640"}],
        "runcmd": [["sh", "-c", "cat /etc/vm-test/hello > /var/tmp/runcmd-saw-file; hostname > /var/tmp/runcmd-host"]],
    }
    if host_keys is not None:
        # An RSA host key takes 10-20 s to make under emulation: only the config drive test pays it.
        doc["ssh_genkeytypes"] = list(host_keys)
    return "#cloud-config\n" + json.dumps(doc)


def instance(iid: str, hostname: str, keys, default: bool = True, host_keys: tuple | None = ("ed25519",)) -> dict:
    return {"instance-id": iid, "hostname": hostname, "public-keys": [keys["meta"][1]],
            "user-data": user_data(hostname, keys["user"][1], default, host_keys), "vendor-data": ""}


def status_of(report) -> dict:
    return json.loads(report.status)


def node(status: dict, name: str) -> dict | None:
    return next((n for n in status.get("nodes", []) if n["id"] == name), None)


def assert_first_login(guest, key, user: str) -> None:
    """sshd starts only once the users and keys are in place (cidag.service is ready at the `login`
    milestone), so the first try with the key must work."""
    guest.wait_sshd()
    res = guest.ssh(key, user, "true")
    assert res.returncode == 0, f"first ssh as {user} refused: {res.stderr}"


def host_crypt(password: str, hashed: str) -> str:
    """`password` hashed with `hashed`'s salt by the host's crypt(3) (Python's crypt module, where
    it still is), else by cidag's own SHA-512 crypt, itself checked against crypt(3) in the unit tests."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        return crypt.crypt(password, hashed)
    except ImportError:
        from cidag.modules._crypto import sha512_crypt

        return sha512_crypt(password, hashed.split("$")[2])


def assert_provisioned(guest, keys, hostname: str, default_user: str | None = "cidag") -> None:
    user_key = keys["user"][0]
    out = guest.root(user_key, "alice", "id alice; hostname; cat /etc/hostname; cat /etc/vm-test/hello;"
                     " stat -c %a /etc/vm-test/hello; cat /var/tmp/runcmd-saw-file /var/tmp/runcmd-host;"
                     " grep -c '^alice:' /etc/subuid /etc/subgid; getent hosts \"$(hostname)\"")
    lines = out.splitlines()
    # subordinate ids as useradd gives a new user (rootless containers need them)
    assert lines[7:9] == ["/etc/subuid:1", "/etc/subgid:1"], lines[7:]
    # the host name resolves from /etc/hosts, not DNS (sudo looks it up: 20 s where DNS does not answer)
    assert lines[9].split() == ["127.0.1.1", hostname], lines[9:]
    assert "sudo" in lines[0] or "uid=" in lines[0]
    assert lines[1] == hostname, "running host name"
    assert lines[2] == hostname, "/etc/hostname"
    assert lines[3] == "hello from user-data" and lines[4] == "640"
    assert lines[5] == "hello from user-data", "runcmd ran after write_files"
    assert lines[6] == hostname, "runcmd ran after the host name was set"
    # The password is stored as a SHA-512 crypt hash of what the cloud-config gave: checked on
    # the host (the guest's Python may have no crypt module: trixie's 3.13 has none).
    stored = guest.root(user_key, "alice", "getent shadow alice").strip().split(":")[1]
    assert stored.startswith("$6$") and host_crypt(PASSWORD, stored) == stored, stored
    if default_user:
        meta = guest.ssh(keys["meta"][0], default_user, "sudo -n id -u")
        assert meta.returncode == 0 and meta.stdout.strip() == "0", meta.stderr


@pytest.mark.boots(3)
def test_config_drive_then_reboot_then_new_instance(cidag_image, workdir, keys, guests, metadata_service):
    # An OpenStack guest with a config drive, whose metadata service accepts and never answers.
    fixture = write_fixture(workdir / "i1.yaml", instance("iid-vm-1", "vm-one", keys, host_keys=None))
    cd1 = seed_iso(workdir, fixture, "configdrive")
    stalled = metadata_service(fixture, {"path": "*", "stall": True})
    g = guests(cidag_image, workdir / "g", cdroms=[cd1], metadata_port=stalled, dmi="openstack").start()
    report = g.wait_report(1)
    assert_first_login(g, keys["user"][0], "alice")
    st = status_of(report)
    assert report.rc == 0 and st["status"] == "done", report.status
    assert st["instance_id"] == "iid-vm-1" and st["result"] == "ok", report.status
    # disable_root: root's copy of the metadata key only says which user to use. Its forced command
    # sleeps 10 s (as cloud-init's does), so it is asked in the background while the rest is checked.
    root_login = subprocess.Popen(g.ssh_argv(keys["meta"][0], "root", "id", fresh=True), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    # The config drive is this instance's source: the stalled service is never waited for.
    first = json.loads(g.root(keys["user"][0], "alice", "cat /var/lib/cidag/last-run.json"))
    openstack = {n["id"]: n for n in first["nodes"]}["source:openstack"]
    assert openstack["status"] == "skipped", openstack
    assert_provisioned(g, keys, "vm-one")
    # cloud-init's default host key types, made for this instance.
    assert g.root(keys["user"][0], "alice", "cd /etc/ssh && ls ssh_host_*_key").split() == [
        "ssh_host_ecdsa_key", "ssh_host_ed25519_key", "ssh_host_rsa_key"]
    fingerprint = "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
    first_fingerprint = g.root(keys["user"][0], "alice", fingerprint)
    login_wait = "systemctl show -p LoadState --value cidag-login.target"
    assert g.root(keys["user"][0], "alice", login_wait).strip() == "loaded"  # a first boot: logins waited
    assert "Please login as the user \"cidag\"" in root_login.communicate(timeout=60)[0]

    # Reboot, same instance: per-instance work is not done again, per-boot work is.
    g.reboot(keys["user"][0], "alice", before="echo tampered > /etc/vm-test/hello")
    again = status_of(g.wait_report(1))
    assert again["instance_id"] == "iid-vm-1"
    record = json.loads(g.root(keys["user"][0], "alice", "cat /var/lib/cidag/last-run.json"))
    nodes = {n["id"]: n for n in record["nodes"]}
    assert nodes["module:write-files"]["status"] == "skipped", nodes["module:write-files"]
    assert nodes["module:create-user"]["status"] == "skipped"
    assert nodes["module:user-data"]["status"] == "ok"  # per-boot
    assert nodes["module:final-message"]["status"] == "ok"
    # Only per-instance work (done) could have wanted the HTTP source: it is not probed at all.
    assert nodes["source:openstack"]["status"] == "skipped" and nodes["source:openstack"]["start_s"] is None
    assert record["result"] == "ok"
    assert g.root(keys["user"][0], "alice", "cat /etc/vm-test/hello").strip() == "tampered"
    # The same machine (SMBIOS UUID) with its login work done: sshd did not wait for cidag.
    assert g.root(keys["user"][0], "alice", login_wait).strip() == "masked"
    # ... and cidag yielded the CPU to them on that boot
    assert g.root(keys["user"][0], "alice", "systemctl show -p CPUWeight --value cidag.service").strip() == "20"
    g.kill()

    # Another instance id on the same disk (a new config drive): per-instance work runs again.
    (workdir / "second").mkdir()
    inst2 = instance("iid-vm-2", "vm-two", keys)
    cd2 = seed_iso(workdir / "second", write_fixture(workdir / "i2.yaml", inst2), "configdrive")
    g2 = guests(cidag_image, workdir / "g", cdroms=[cd2]).start()
    st2 = status_of(g2.wait_report(1))
    assert st2["instance_id"] == "iid-vm-2"
    assert_first_login(g2, keys["user"][0], "alice")
    assert_provisioned(g2, keys, "vm-two")
    # A new instance gets new host keys, the old ones deleted (ssh_deletekeys), only the types asked for.
    assert g2.root(keys["user"][0], "alice", "cd /etc/ssh && ls ssh_host_*_key").split() == ["ssh_host_ed25519_key"]
    assert g2.root(keys["user"][0], "alice", fingerprint) != first_fingerprint
    # Another machine booted from the disk: logins waited for this instance's users and keys.
    assert g2.root(keys["user"][0], "alice", login_wait).strip() == "loaded"


def test_openstack_http_onlink_without_default_route(cidag_image, workdir, keys, guests, metadata_service):
    # No config drive; DHCP gives an address in 169.254.0.0/16 and no router (vmnet=onlink), so
    # 169.254.169.254 is on-link: the HTTP source needs a route to its endpoint, not a default route.
    inst = instance("iid-openstack-1", "vm-openstack", keys)
    port = metadata_service(write_fixture(workdir / "md.yaml", inst, openstack={"enabled": True},
                                          ec2={"enabled": False}))
    g = guests(cidag_image, workdir / "g", metadata_port=port, dmi="openstack", net="onlink").start()
    report = g.wait_report(1)
    assert_first_login(g, keys["user"][0], "alice")
    st = assert_run_ok(report)
    assert st["instance_id"] == "iid-openstack-1", st
    assert_no_default_route(g, keys["user"][0])
    # Provisioned from the metadata service: its host name, its key for the default user.
    assert_provisioned(g, keys, "vm-openstack")
    record = json.loads(g.root(keys["user"][0], "alice", "cat /var/lib/cidag/last-run.json"))
    nodes = {n["id"]: n for n in record["nodes"]}
    # network -> HTTP source, in one DAG: the source started once the network was up.
    assert nodes["source:openstack"]["status"] == "available", nodes["source:openstack"]
    assert nodes["source:openstack"]["start_s"] >= nodes["module:network"]["end_s"]


def test_ec2_imdsv2(cidag_image, workdir, keys, guests, metadata_service):
    inst = instance("iid-ec2-1", "vm-ec2", keys)
    port = metadata_service(write_fixture(workdir / "md.yaml", inst, openstack={"enabled": False},
                                          ec2={"enabled": True}))
    g = guests(cidag_image, workdir / "g", metadata_port=port, dmi="ec2").start()
    report = g.wait_report(1)
    assert_first_login(g, keys["user"][0], "alice")
    st = status_of(report)
    assert st["instance_id"] == "iid-ec2-1", st
    record = json.loads(g.root(keys["user"][0], "alice", "cat /var/lib/cidag/last-run.json"))
    assert record["capabilities"]["instance-id"]["provider"] == "source:ec2", record["capabilities"]
    assert_provisioned(g, keys, "vm-ec2")


# The four clouds told by DMI alone (machine.DMI: -smbios type=1 and, for Azure and Oracle, the
# type=3 asset tag), metadata through the relay at 169.254.169.254:80. Per cloud: the fixture
# key of its instance id and the default user that gets the metadata's keys (Azure: the ovf's
# UserName, `azureuser` in the fixture). Hetzner's guest is Debian 13 (trixie: systemd 257,
# Python 3.13) where the others are Debian 12: one boot of each Debian cidag supports.
CLOUDS = {"gce": ("instance-id", "cidag", "cidag"), "azure": ("vm-id", "azureuser", "cidag"),
          "oracle": ("instance-id", "cidag", "cidag"), "hetzner": ("instance-id", "cidag", "cidag-trixie")}


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_from_dmi(cidag_image, workdir, keys, guests, metadata_service, cloud):
    id_key, default_user, variant = CLOUDS[cloud]
    image = cidag_image if variant == "cidag" else guest_image.image(variant)
    fixture = write_fixture(workdir / "md.yaml", instance(f"iid-{cloud}-1", f"vm-{cloud}", keys),
                            **{cloud: {id_key: f"iid-{cloud}-1"}})
    port = metadata_service(fixture)
    # Azure: ovf-env.xml on a CD (/dev/sr0), and the wireserver at 168.63.129.16 relayed too.
    azure = cloud == "azure"
    g = guests(image, workdir / "g", metadata_port=port, dmi=cloud, wireserver=azure,
               cdroms=[seed_iso(workdir, fixture, "azure")] if azure else []).start()
    report = g.wait_report(1)
    assert_first_login(g, keys["user"][0], "alice")
    assert status_of(report)["instance_id"] == f"iid-{cloud}-1"
    record = json.loads(g.root(keys["user"][0], "alice", "cat /var/lib/cidag/last-run.json"))
    nodes = {n["id"]: n for n in record["nodes"]}
    assert record["capabilities"]["instance-id"]["provider"] == f"source:{cloud}", record["capabilities"]
    assert nodes[f"source:{cloud}"]["start_s"] >= nodes["module:network"]["end_s"]
    for other in set(CLOUDS) - {cloud}:  # ruled out by DMI at once
        assert nodes[f"source:{other}"]["status"] in ("unavailable", "skipped"), nodes[f"source:{other}"]
    assert_provisioned(g, keys, f"vm-{cloud}", default_user=default_user)
    ready = nodes["module:report-ready"]
    if azure:  # the simulator answers 400 to a Health report that does not match its goal state
        source_log = json.dumps(nodes["source:azure"].get("log", []))
        assert "IMDS only" not in source_log, source_log  # ovf-env.xml was read from /dev/sr0
        assert ready["status"] == "ok", ready["reason"]
        assert any("reported ready to http://168.63.129.16" in e["message"] for e in ready["log"]), ready
    else:
        assert ready["status"] == "ok" and "nothing to report" in json.dumps(ready["log"]), ready


def test_no_source_at_all_still_boots(cidag_image, workdir, guests):
    g = guests(cidag_image, workdir / "g").start()
    report = g.wait_report(1)
    st = status_of(report)
    assert st["status"] == "done"
    assert st["instance_id"] == "iid-datasource-none"
    # The boot is not held: sshd comes up (nobody has a key, as on cloud-init's None source).
    g.wait_sshd(120)
    assert report.uptime < 120


@pytest.mark.boots(3)
def test_hard_power_off_mid_provisioning_then_clean(cidag_image, workdir, keys, guests):
    inst = instance("iid-crash-1", "vm-crash", keys)
    doc = json.loads(inst["user-data"].split("\n", 1)[1])
    # The first time, runcmd tells the host it is running and then hangs; QEMU is killed there.
    doc["runcmd"].append(["sh", "-c", "if [ ! -e /var/tmp/hung-once ]; then touch /var/tmp/hung-once; sync;"
                                      " echo VM-MARK-RUNCMD > /dev/ttyS1; sleep 600; fi"])
    inst["user-data"] = "#cloud-config\n" + json.dumps(doc)
    seed = seed_iso(workdir, write_fixture(workdir / "c.yaml", inst), "configdrive")
    g = guests(cidag_image, workdir / "g", disks=[seed]).start()
    g.wait_text("VM-MARK-RUNCMD")
    g.kill()  # the power cord, mid-provisioning: nothing in the guest is told

    g2 = guests(cidag_image, workdir / "g", disks=[seed]).start()
    st = status_of(g2.wait_report(1))
    assert_first_login(g2, keys["user"][0], "alice")
    assert st["instance_id"] == "iid-crash-1" and st["exit_code"] == 0, st
    record = json.loads(g2.root(keys["user"][0], "alice", "cat /var/lib/cidag/last-run.json"))
    nodes = {n["id"]: n for n in record["nodes"]}
    # What had ended ok is not done again; what was cut short runs again, to the end.
    assert nodes["module:create-user"]["status"] == "skipped"
    assert nodes["module:runcmd"]["status"] == "ok"
    assert_provisioned(g2, keys, "vm-crash")
    # Every state file is whole (written to a temp file, fsynced, renamed), none left behind.
    listing = g2.root(keys["user"][0], "alice",
                      "find /var/lib/cidag -type f | while read f; do case $f in *.json) "
                      "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' $f || echo BROKEN $f;; "
                      "*/login-identity) head -n 1 $f | grep -Eq '^[0-9a-f-]{36}$' || echo BROKEN $f;; "
                      "*) echo ODD $f;; esac; done")
    assert "BROKEN" not in listing and "ODD" not in listing, listing

    # `cidag clean --host-keys --machine-id` then a reboot, same config drive: the per-instance work
    # is done again, with new host keys and a new machine-id (docs/image-builders.md).
    user = keys["user"][0]
    before = g2.root(user, "alice", "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub; cat /etc/machine-id")
    g2.reboot(user, "alice", before="echo tampered > /etc/vm-test/hello; cidag clean -q --host-keys --machine-id")
    st = status_of(g2.wait_report(1))
    assert st["status"] == "done" and st["instance_id"] == "iid-crash-1", st
    assert_first_login(g2, user, "alice")
    record = json.loads(g2.root(user, "alice", "cat /var/lib/cidag/last-run.json"))
    nodes = {n["id"]: n for n in record["nodes"]}
    assert nodes["module:write-files"]["status"] == "ok" and nodes["module:create-user"]["status"] == "ok"
    assert g2.root(user, "alice", "cat /etc/vm-test/hello").strip() == "hello from user-data"
    after = g2.root(user, "alice", "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub; cat /etc/machine-id")
    assert after.splitlines()[0] != before.splitlines()[0], (before, after)  # new host key
    # systemd made a machine-id again (under KVM it may derive the same one from the SMBIOS UUID)
    assert re.fullmatch(r"[0-9a-f]{32}", after.splitlines()[1]), after
    # login-identity was removed: this boot's logins waited for cidag again
    assert g2.root(user, "alice", "systemctl show -p LoadState --value cidag-login.target").strip() == "loaded"


# -- networks without a default route, and a login before a slow runcmd ends (issue 14) -------------------

# network_data.json: the address slirp's ssh forward points at, set statically, and no gateway at all.
NO_GATEWAY_NETWORK_DATA = {
    "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56", "mtu": 1500}],
    "networks": [{"id": "net0", "type": "ipv4", "link": "nic0", "ip_address": "169.254.2.15",
                  "netmask": "255.255.0.0", "routes": [], "network_id": "vm-test-net"}],
    "services": [],
}


def assert_no_default_route(guest, key) -> str:
    """The guest has no default route (checked where it matters: in the guest); returns `ip -4 route`."""
    routes = guest.ssh(key, "alice", "ip -4 route", check=True).stdout
    assert not any(line.startswith("default") for line in routes.splitlines()), routes
    return routes


def assert_run_ok(report) -> dict:
    st = status_of(report)
    assert report.rc == 0 and st["status"] == "done" and st["result"] == "ok", report.status
    return st


SLOW_RUNCMD_S = 25  # long enough that a login at sshd's start lands well inside it


def test_no_default_route_and_a_login_before_a_slow_runcmd_ends(cidag_image, workdir, keys, guests):
    # A network with no router: the config drive's network_data gives an address and no gateway.
    # And sshd waits for the user's keys, not for the whole run: a login works while runcmd still sleeps.
    inst = instance("iid-nogw-cd", "vm-nogw-cd", keys)
    doc = json.loads(inst["user-data"].split("\n", 1)[1])
    doc["runcmd"].append(["sleep", str(SLOW_RUNCMD_S)])
    inst["user-data"] = "#cloud-config\n" + json.dumps(doc)
    fixture = write_fixture(workdir / "f.yaml", inst,
                            openstack={"enabled": True, "network_data": NO_GATEWAY_NETWORK_DATA})
    drive = seed_iso(workdir, fixture, "configdrive")
    g = guests(cidag_image, workdir / "g", cdroms=[drive], dmi="openstack", net="static").start()
    probe = machine.LoginProbe(g, keys["user"][0], "alice").start()
    try:
        login_s = probe.wait_login(300)
    finally:
        probe.stop()
    assert login_s is not None, f"no login in 300 s\n{g.console_tail()}"
    during = json.loads(g.root(keys["user"][0], "alice", "cidag status --format json"))
    assert during["status"] == "running", during
    report = g.wait_report(1)
    st = assert_run_ok(report)
    assert report.host_seconds > login_s, (report.host_seconds, login_s)
    assert st["instance_id"] == "iid-nogw-cd"
    assert_provisioned(g, keys, "vm-nogw-cd")
    routes = assert_no_default_route(g, keys["user"][0])
    assert "169.254.0.0/16" in routes and "169.254.2.15" in routes, routes
    # network_data rendered for networkd, the stock image's manager
    assert ".network" in g.root(keys["user"][0], "alice", "ls /etc/systemd/network/")
