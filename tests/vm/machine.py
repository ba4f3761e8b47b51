"""One QEMU guest under software emulation, driven and checked from the host.

The guest sees: its disk (a qcow2 overlay on the cached image), optional
read-only seed disks (a config drive or a NoCloud ISO), one virtio NIC on QEMU's
user network ``169.254.0.0/16`` where ``169.254.169.254:80`` is relayed to a
metadata service on the host's loopback, and two serial ports: ttyS0 (kernel
console) and ttyS1 (the harness's report unit), both written to files here.
The host reaches the guest's sshd through a forwarded loopback port.

`net` emulates a network without a default route (slirp's DHCP always offers a
router): `onlink` or `hostroute` on the kernel command line makes the image's
generator (units/vm-net-env) tell networkd to ignore it; `static` only turns
slirp's IPv6 (its router advertisements) off; see docs/vm-tests.md.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from guest_image import Image

HERE = Path(__file__).resolve().parent
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", "IdentitiesOnly=yes"]
REPORT_RE = re.compile(r"^VM-REPORT (\S+) uptime=(\S+) rc=(\d+) units=(\S*)(?: marks=(\S*))?$", re.M)
# -smbios options per scenario: type=1 is the system (sys_vendor, product_name), type=3 the
# chassis (chassis_asset_tag), which is how Azure and Oracle are told (cidag/platform_check.py).
DMI: dict[str, tuple[str, ...]] = {
    "openstack": ("type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova",),
    "ec2": ("type=1,manufacturer=Amazon EC2,product=t3.micro",),
    "gce": ("type=1,manufacturer=Google,product=Google Compute Engine",),
    "azure": ("type=1,manufacturer=Microsoft Corporation,product=Virtual Machine",
              "type=3,manufacturer=Microsoft Corporation,asset=7783-7084-3265-9085-8269-3286-77"),
    "oracle": ("type=1,manufacturer=QEMU,product=Standard PC", "type=3,asset=OracleCloud.com"),
    "hetzner": ("type=1,manufacturer=Hetzner,product=vServer",),
    "qemu": (),
}
WIRESERVER = "168.63.129.16"  # Azure's wireserver: relayed to the metadata service too (wireserver=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_iso(tree: Path, label: str, out: Path) -> Path:
    """An ISO9660 (Rock Ridge, Joliet) image of `tree` with volume label `label`."""
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-V", label, "-J", "-R", str(tree)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


@dataclass
class Report:
    """What the guest's report unit wrote on ttyS1 once provisioning was done."""

    tool: str
    uptime: float
    rc: int
    status: str
    units: dict[str, dict[str, int]]
    host_seconds: float  # from QEMU start to the report, on the host's monotonic clock
    # guest monotonic seconds: basic, network (targets reached), ssh (sshd up); clock: (wall, monotonic)
    marks: dict = field(default_factory=dict)


@dataclass
class Guest:
    image: Image
    workdir: Path
    disks: list[Path] = field(default_factory=list)  # read-only seeds on virtio, in order
    # read-only seeds on SATA CD-ROMs, as OpenStack attaches a config drive (and Azure its ovf disk): unlike virtio-blk
    # (in the initrd) their drivers (ahci, sr_mod) load at udev's coldplug in the real root
    cdroms: list[Path] = field(default_factory=list)
    metadata_port: int | None = None  # host loopback port behind 169.254.169.254:80
    dmi: str = "qemu"
    mac: str = "52:54:00:12:34:56"
    memory: str = "1024"
    cpus: int = 2
    append: str = ""
    # dhcp: slirp's DHCP as is; onlink / hostroute: no default route (see above); static: no IPv6
    # router either, and nothing changed in the guest (the network-config gives no gateway)
    net: str = "dhcp"
    # Also relay WIRESERVER:80 to the metadata service. slirp forwards only addresses inside its
    # network, so the network becomes 168.0.0.0/7 (holding 168.63.129.16 and 169.254.169.254:
    # both on-link) instead of 169.254.0.0/16.
    wireserver: bool = False

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.overlay = self.workdir / "disk.qcow2"
        self.console = self.workdir / "console.log"
        self.reports = self.workdir / "ttyS1.log"
        self.ssh_port = free_port()
        # The machine's SMBIOS UUID, as a cloud gives each instance its own: kept across its reboots.
        self.uuid = str(uuid.uuid4())
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._mux_dir: Path | None = None  # shared ssh connections (ssh())
        if not self.overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(self.image.disk), str(self.overlay)], check=True)

    # -- life cycle -------------------------------------------------------------
    def argv(self) -> list[str]:
        subnet = "168.0.0.0/7" if self.wireserver else "169.254.0.0/16"
        net = f"user,id=n0,net={subnet},hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        if self.net != "dhcp":
            # slirp's IPv6 router advertisements would give the guest an IPv6 default route.
            net += ",ipv6=off"
        if self.metadata_port is not None:
            relay = f"{sys.executable} {HERE / 'relay.py'} 127.0.0.1 {self.metadata_port}"
            net += f",guestfwd=tcp:169.254.169.254:80-cmd:{relay}"
            if self.wireserver:
                net += f",guestfwd=tcp:{WIRESERVER}:80-cmd:{relay}"
        argv = [
            "qemu-system-x86_64", "-M", "q35", "-nodefaults", "-accel", "tcg", "-cpu", "max",
            "-smp", str(self.cpus), "-m", self.memory, "-display", "none", "-no-user-config",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", f"root=LABEL=root rw console=ttyS0 quiet {self._vmnet()}{self.append}".strip(),
            "-drive", f"file={self.overlay},if=virtio,format=qcow2",
            "-netdev", net, "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            "-chardev", f"file,id=s0,path={self.console}", "-serial", "chardev:s0",
            "-chardev", f"file,id=s1,path={self.reports}", "-serial", "chardev:s1",
            "-device", "virtio-rng-pci", "-uuid", self.uuid,
        ]
        for spec in DMI[self.dmi]:
            argv += ["-smbios", spec]
        for disk in self.disks:
            argv += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        for i, cd in enumerate(self.cdroms):  # q35's own AHCI controller has ports ide.0-ide.5
            argv += ["-drive", f"file={cd},if=none,id=cd{i},media=cdrom,format=raw,readonly=on",
                     "-device", f"ide-cd,drive=cd{i},bus=ide.{i}"]
        return argv

    def _vmnet(self) -> str:
        if self.net in ("dhcp", "static"):
            return ""
        if self.net not in ("onlink", "hostroute"):
            raise ValueError(f"unknown net {self.net!r}")
        return f"vmnet={self.net} "

    def start(self) -> "Guest":
        for f in (self.console, self.reports):
            # The logs of an earlier QEMU on this disk are kept (console.log.1, ...) for a failure's post-mortem.
            if f.exists() and f.stat().st_size:
                n = 1
                while f.with_name(f"{f.name}.{n}").exists():
                    n += 1
                f.rename(f.with_name(f"{f.name}.{n}"))
            f.write_bytes(b"")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "qemu.err", "ab"), start_new_session=True)
        return self

    def kill(self) -> None:
        """Pull the plug: QEMU quits at once, nothing in the guest is told."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        self._close_shared()

    def wait_exit(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def _alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            err = (self.workdir / "qemu.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"QEMU is not running: {err}\n{self.console_tail()}")

    def console_tail(self, n: int = 40) -> str:
        lines = self.console.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    # -- what the guest reports ---------------------------------------------------
    def reports_seen(self) -> list[Report]:
        text = self.reports.read_text(errors="replace").replace("\r", "")
        out = []
        for m in REPORT_RE.finditer(text):
            before = text[: m.start()]
            status = before[before.rfind("VM-STATUS-BEGIN\n") + 16: before.rfind("VM-STATUS-END")]
            units = {}
            for item in filter(None, m.group(4).split(",")):
                name, *vals = item.split(":")
                nums = [int(v) if v.isdigit() else 0 for v in vals[:3]]
                units[name] = dict(zip(("cpu_ns", "exit_us", "start_us"), nums))
            out.append(Report(m.group(1), float(m.group(2)), int(m.group(3)), status.strip(), units, 0.0,
                              _marks(m.group(5) or "")))
        return out

    def wait_report(self, count: int = 1, timeout: float = 300) -> Report:
        """Wait for the `count`-th report of this QEMU process; return it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._alive()
            seen = self.reports_seen()
            if len(seen) >= count:
                rep = seen[count - 1]
                rep.host_seconds = time.monotonic() - self.started
                return rep
            time.sleep(0.2)
        raise TimeoutError(f"no report {count} after {timeout}s\n{self.console_tail()}")

    def wait_text(self, text: str, timeout: float = 300) -> float:
        """Wait until `text` shows on ttyS1; return the seconds since QEMU started."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._alive()
            if text in self.reports.read_text(errors="replace"):
                return time.monotonic() - self.started
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not seen in {timeout}s\n{self.console_tail()}")

    # -- ssh ----------------------------------------------------------------------
    def sshd_banner(self, timeout: float = 2.0) -> bool:
        """True once the guest's sshd answers (QEMU accepts the TCP connection before it does)."""
        try:
            with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def wait_sshd(self, timeout: float = 300) -> float:
        """Wait until sshd answers; return the seconds since QEMU started."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._alive()
            if self.sshd_banner():
                return time.monotonic() - self.started
            time.sleep(0.25)
        raise TimeoutError(f"sshd did not answer in {timeout}s\n{self.console_tail()}")

    def ssh(self, key: Path, user: str, command: str, timeout: float = 60,
            check: bool = False, fresh: bool = False) -> subprocess.CompletedProcess:
        """Run `command` as `user` with `key`. Calls after the first with the same key and user
        in the same boot share one connection (ControlMaster): under emulation a new one costs
        the guest 2-3 s of key exchange, sshd's re-exec and PAM. The first login of each key,
        user and boot is a real one; `fresh=True` makes every call one."""
        res = subprocess.run(self.ssh_argv(key, user, command, fresh), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"ssh {user}: {command!r} -> {res.returncode}: {res.stderr.strip()}")
        return res

    def ssh_argv(self, key: Path, user: str, command: str, fresh: bool = False) -> list[str]:
        """The ssh command line `ssh()` runs (for a command the caller runs in the background)."""
        return ["ssh", *SSH_OPTS, *self._shared(key, user, fresh), "-i", str(key), "-p", str(self.ssh_port),
                f"{user}@127.0.0.1", command]

    def _shared(self, key: Path, user: str, fresh: bool) -> list[str]:
        if fresh:
            return ["-o", "ControlPath=none"]
        if self._mux_dir is None:
            # A short path of its own: a socket's path may not exceed ~104 bytes (pytest's are longer).
            self._mux_dir = Path(tempfile.mkdtemp(prefix="vm-ssh-"))
        # One connection per boot: after a reboot (a new report) the old one is dead, so the
        # boot's number is in the socket's name and a new boot makes a new connection.
        boot = len(self.reports_seen())
        name = f"{boot}-{hashlib.sha1(f'{key}:{user}'.encode()).hexdigest()[:12]}"
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._mux_dir / name}",
                "-o", "ControlPersist=30"]

    def _close_shared(self) -> None:
        if self._mux_dir is not None:
            for sock in self._mux_dir.iterdir():  # each master goes at once, not at ControlPersist
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True,
                               timeout=10, stdin=subprocess.DEVNULL, check=False)
            shutil.rmtree(self._mux_dir, ignore_errors=True)
            self._mux_dir = None

    def reboot(self, key: Path, user: str, before: str = "", timeout: float = 180) -> None:
        """As root, run `before` (if any), then power the guest off from inside and start the
        same machine again: the same disk, SMBIOS UUID, devices and forwarded ports; its
        reports count from 1 again. Not `systemctl reboot`: after QEMU's own reset the next
        boot ran 1.5-2x slower under emulation (basic.target at 16-26 s of uptime instead of
        11-12 s; 47-50 s from the command to cidag's report instead of 29-30 s, idle host)."""
        self._close_shared()  # the next boot gets its own connections; none is held through the shutdown
        command = f"{before} && systemctl poweroff" if before else "systemctl poweroff"
        res = self.ssh(key, user, "sudo -n sh -c " + shlex.quote(command), fresh=True)
        if res.returncode not in (0, 255):  # 255: the connection went down with the guest
            raise AssertionError(f"reboot: {command!r} -> {res.returncode}: {res.stderr.strip()}")
        self.wait_exit(timeout)
        self.start()

    def root(self, key: Path, user: str, command: str, timeout: float = 60) -> str:
        """Run `command` as root through sudo (the user's sudo rule); return its stdout."""
        res = self.ssh(key, user, "sudo -n sh -c " + shlex.quote(command), timeout=timeout)
        if res.returncode != 0:
            raise AssertionError(f"as root: {command!r} -> {res.returncode}: {res.stderr.strip()}")
        return res.stdout


def _marks(text: str) -> dict:
    """`basic:US,network:US,ssh:US,clock:WALL/MONO` -> seconds (None when not reached)."""
    out: dict = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition(":")
        if name == "clock":
            wall, _, mono = value.partition("/")
            try:
                out["clock"] = (float(wall), float(mono))
            except ValueError:
                pass
        else:
            out[name] = int(value) / 1e6 if value.isdigit() and int(value) else None
    return out


class LoginProbe:
    """From QEMU's start, independently of the report unit: when sshd first answers, when a login first works.

    Two threads, each with at most one connection in flight. One connects to the
    forwarded ssh port and waits for the `SSH-` banner on that connection until the
    guest answers or refuses it (refused: again `interval` seconds later). It never
    gives up on a pending connection: slirp keeps sending the SYN of an abandoned
    one to the guest, and once sshd listens they all arrive together, trip sshd's
    MaxStartups and cost a fork each (a probe that gave up after 2 s saw sshd 12 s
    late; one that opened four a second never saw it). The other, once a banner was seen, runs
    `ssh -o BatchMode=yes USER@guest true` with the key, again `interval` seconds
    after each failure, until one exits 0. Times are seconds since `guest.started` on
    the host's monotonic clock, taken when the banner arrived / the command returned.
    """

    def __init__(self, guest: "Guest", key: Path, user: str, interval: float = 0.25) -> None:
        self.guest, self.key, self.user, self.interval = guest, key, user, interval
        self.sshd_s: float | None = None
        self.login_s: float | None = None
        self.attempts = 0
        self.last_error = ""  # of the last failed login try
        self._stop = threading.Event()
        self._banner = threading.Event()
        self._threads = [threading.Thread(target=self._banners, daemon=True),
                         threading.Thread(target=self._logins, daemon=True)]

    def start(self) -> "LoginProbe":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._banner.set()
        for t in self._threads:
            t.join(20)

    def wait_login(self, timeout: float) -> float | None:
        """Seconds since QEMU's start of the first login, waiting up to `timeout`; None if none yet."""
        end = time.monotonic() + timeout
        while self.login_s is None and time.monotonic() < end and not self._stop.is_set():
            time.sleep(0.1)
        return self.login_s

    def _banners(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.guest.ssh_port), timeout=5) as s:
                    s.settimeout(120)  # see the class docstring: pending connections are not abandoned
                    if s.recv(64).startswith(b"SSH-"):
                        self.sshd_s = time.monotonic() - self.guest.started
                        self._banner.set()
                        return
            except OSError:
                pass
            self._stop.wait(self.interval)

    def _logins(self) -> None:
        self._banner.wait()
        # ssh takes the first value given for an option: this ConnectTimeout before SSH_OPTS' own.
        # Generous: on a loaded host an emulated sshd takes seconds to fork, exchange keys and open a session.
        argv = ["ssh", "-o", "ConnectTimeout=30", *SSH_OPTS, "-i", str(self.key), "-p", str(self.guest.ssh_port),
                f"{self.user}@127.0.0.1", "true"]
        while not self._stop.is_set():
            self.attempts += 1
            try:
                res = subprocess.run(argv, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
                if res.returncode == 0:
                    self.login_s = time.monotonic() - self.guest.started
                    return
                self.last_error = f"exit {res.returncode}: {res.stderr.strip()[-200:]}"
            except subprocess.TimeoutExpired:
                self.last_error = "ssh did not return in 90 s"
            self._stop.wait(self.interval)


def keypair(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """A fresh ssh key pair for a scenario: (private key path, public key line)."""
    key = directory / name
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vm-test-{name}", "-f", str(key)],
                       check=True)
    return key, key.with_suffix(".pub").read_text().strip()
