"""Debian guest images (bookworm, and trixie for the benchmark) for the boot tests and the boot benchmark.

Two layers, both cached outside the repository (``$CIDAG_VM_CACHE``, default
``/var/cache/cidag-vm``) and keyed on their inputs:

- the *base*: an mmdebstrap tarball of the suite with systemd, a kernel, sshd
  and cidag's Python dependencies (or cloud-init, for the comparison variants),
  plus the kernel and a small initrd taken out of it;
- the *image*: the base unpacked, the tool installed from this checkout (cidag as
  its .deb, built by scripts/build_deb.py and installed with the guest's dpkg) and a
  report unit added, packed with ``mkfs.ext4 -d``
  (no loop device needed). Each boot writes to its own qcow2 overlay.

Needs root (files keep their owners) and mmdebstrap, e2fsprogs, qemu-utils.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRROR = os.environ.get("CIDAG_VM_MIRROR", "http://deb.debian.org/debian")
IMAGE_SIZE = "2G"

COMMON_PACKAGES = [
    "systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools", "kmod",
    "openssh-server", "sudo", "iproute2", "passwd", "mount", "util-linux",
    "procps", "python3",
]
CIDAG_PACKAGES = ["python3-yaml", "python3-networkx", "python3-click"]
# Debian's own cloud-init, for the comparison benchmark (22.4.2 in bookworm).
CLOUD_INIT_PACKAGES = ["cloud-init"]

# A variant is a tool on a suite: bookworm's cloud-init is 22.4.2 (four processes, one per
# stage); trixie's is 25.x (one process since 24.3). "bare" is the guest with no tool.
VARIANTS = {
    "cidag": ("bookworm", "cidag"),
    "cloud-init": ("bookworm", "cloud-init"),
    "bare": ("bookworm", "bare"),
    "cidag-trixie": ("trixie", "cidag"),
    "cloud-init-trixie": ("trixie", "cloud-init"),
    "bare-trixie": ("trixie", "bare"),
}
TOOL_PACKAGES = {
    "cidag": CIDAG_PACKAGES,
    "cloud-init": CLOUD_INIT_PACKAGES,
    "bare": CIDAG_PACKAGES,
}
# Packages only one suite needs (none so far: systemd-networkd is in systemd in both).
SUITE_PACKAGES: dict[str, list[str]] = {"bookworm": [], "trixie": []}

# The network renderers' boots (docs/vm-tests.md): one more base with every network stack installed
# (ifupdown's DHCP client too), so three variants share one mmdebstrap; each image then leaves one
# stack in charge, and cidag's `renderer: auto` must find it from the image's files.
NET_PACKAGES = ["netplan.io", "network-manager", "ifupdown", "isc-dhcp-client"]
NET_VARIANTS = {
    "cidag-netplan": "netplan",  # netplan on networkd, as Debian 12 cloud images and Ubuntu servers
    "cidag-nm": "network-manager",  # NetworkManager alone, as Fedora and RHEL
    "cidag-eni": "eni",  # ifupdown alone, as older Debian cloud images
}
VARIANTS.update({v: ("bookworm", "cidag") for v in NET_VARIANTS})


def variant_packages(variant: str) -> list[str]:
    suite, tool = VARIANTS[variant]
    extra = NET_PACKAGES if variant in NET_VARIANTS else []
    return COMMON_PACKAGES + SUITE_PACKAGES[suite] + TOOL_PACKAGES[tool] + extra


def tool_of(variant: str) -> str:
    """cidag, cloud-init or bare."""
    return VARIANTS[variant][1]

# Run inside the tree once the packages are in (``$1`` is the tree).
BASE_CUSTOMIZE = r"""
set -e
R="$1"
echo localhost > "$R/etc/hostname"
printf '127.0.0.1 localhost\n' > "$R/etc/hosts"
printf 'LABEL=root / ext4 rw,errors=remount-ro 0 1\n' > "$R/etc/fstab"
# The kernel console is on ttyS0; a getty there hangs the port up and eats output.
ln -sf /dev/null "$R/etc/systemd/system/serial-getty@ttyS0.service"
# The guest's network stack: systemd-networkd (tools render .network files for it).
chroot "$R" systemctl enable systemd-networkd.service >/dev/null 2>&1
# No machine-id: a first boot, as a cloud image ships it.
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
# A small initrd: just what finds an ext4 root on virtio.
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$R/etc/initramfs-tools/conf.d/cidag-vm.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' > "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k all >/dev/null
# sshd host keys are made per instance (by cidag, cloud-init or the first boot).
rm -f "$R"/etc/ssh/ssh_host_*
rm -rf "$R/var/cache/apt/archives"/*.deb "$R/var/lib/apt/lists"/*
"""


def cache_dir() -> Path:
    path = Path(os.environ.get("CIDAG_VM_CACHE", "/var/cache/cidag-vm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _building():
    """One builder at a time per cache (pytest workers and the benchmark may start together)."""
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tree_digest(root: Path, patterns: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _run(argv: list[str], **kw) -> None:
    subprocess.run(argv, check=True, **kw)


@dataclass(frozen=True)
class Base:
    tarball: Path
    kernel: Path
    initrd: Path


def base(variant: str) -> Base:
    """The cached base for `variant` (its suite and tool), built with mmdebstrap on first use."""
    with _building():
        return _base(variant)


def _base(variant: str) -> Base:
    suite, tool = VARIANTS[variant]
    packages = variant_packages(variant)
    key = _digest(suite, MIRROR, ",".join(packages), BASE_CUSTOMIZE)
    # bookworm's names predate the suites (the cache keeps its bases).
    kind = "cloud-init" if tool == "cloud-init" else "cidag"
    out = cache_dir() / (f"base-{kind}-{key}" if suite == SUITE else f"base-{suite}-{kind}-{key}")
    done = Base(out / "rootfs.tar", out / "vmlinuz", out / "initrd.img")
    if done.initrd.exists():
        return done
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        _run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(packages),
              "--customize-hook=" + BASE_CUSTOMIZE.strip(), "--aptopt=Apt::Install-Recommends \"false\"",
              suite, str(tmp / "rootfs.tar"), MIRROR])
        listing = subprocess.run(["tar", "-tf", str(tmp / "rootfs.tar")], check=True,
                                 capture_output=True, text=True).stdout.split()
        kernel = sorted(p for p in listing if p.lstrip("./").startswith("boot/vmlinuz-"))[-1]
        initrd = sorted(p for p in listing if p.lstrip("./").startswith("boot/initrd.img-"))[-1]
        _run(["tar", "-xf", str(tmp / "rootfs.tar"), "-C", str(tmp), kernel, initrd])
        os.replace(tmp / kernel, tmp / "vmlinuz")
        os.replace(tmp / initrd, tmp / "initrd.img")
        shutil.rmtree(tmp / "boot", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return done


@dataclass(frozen=True)
class Image:
    variant: str
    disk: Path
    kernel: Path
    initrd: Path


def _install_cidag(tree: Path) -> None:
    """cidag's .deb (scripts/build_deb.py, what `make deb` builds from this checkout) installed
    with the guest's own dpkg: every boot test also proves the package installs and boots.
    Its postinst byte-compiles, enables the units and writes the compiled plan, so the first
    boot imports neither networkx nor click and parses no manifest (docs/image-builders.md)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_deb
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory(prefix="cidag-deb-", dir=tree / "tmp") as out:
        deb = build_deb.build(Path(out))
        _run(["chroot", str(tree), "dpkg", "-i", "/" + str(deb.relative_to(tree))],
             stdout=subprocess.DEVNULL)
    # What the package must have done (a wrong path would only show as a guest that never provisions).
    for path in ("etc/systemd/system/cidag.target.wants/cidag.service",
                 "etc/systemd/system/multi-user.target.wants/cidag.target",
                 "usr/lib/systemd/system-generators/cidag-generator", "var/cache/cidag/compiled.pickle"):
        if not os.path.lexists(tree / path):
            raise RuntimeError(f"cidag's .deb left no /{path} in the guest image")


def _network_stack(tree: Path, stack: str) -> None:
    """Leave one network stack in charge: the others disabled (NetworkManager and ifupdown stay
    installed, as on images that carry them unused), netplan purged where it must not be found."""
    units = {"netplan": "systemd-networkd.service", "network-manager": "NetworkManager.service",
             "eni": "networking.service"}
    off = [u for u in ("systemd-networkd.service", "NetworkManager.service", "networking.service")
           if u != units[stack]]
    _run(["chroot", str(tree), "systemctl", "disable", *off], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _run(["chroot", str(tree), "systemctl", "enable", units[stack]], stdout=subprocess.DEVNULL,
         stderr=subprocess.DEVNULL)
    if stack != "netplan":  # netplan comes first in cidag's order: an image with it uses it
        _run(["chroot", str(tree), "dpkg", "--purge", "netplan.io"], stdout=subprocess.DEVNULL)


def _install_report(tree: Path, variant: str) -> None:
    """The harness's own unit: once provisioning is done, the tool's status goes to ttyS1."""
    name = f"report-{tool_of(variant)}.service"
    shutil.copy(HERE / "units" / name, tree / "etc/systemd/system/vm-report.service")
    shutil.copy(HERE / "units/vm-report", tree / "usr/local/sbin/vm-report")
    (tree / "usr/local/sbin/vm-report").chmod(0o755)
    # The generator that emulates a network without a default route (`vmnet=` on the kernel command line).
    generators = tree / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "units/vm-net-env", generators / "vm-net-env")
    (generators / "vm-net-env").chmod(0o755)
    _run(["chroot", str(tree), "systemctl", "enable", "vm-report.service"],
         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def image(variant: str = "cidag") -> Image:
    """The cached bootable image of `variant` (a key of VARIANTS) for this checkout."""
    with _building():
        return _image(variant)


def _image(variant: str) -> Image:
    b = _base(variant)
    inputs = [b.tarball.parent.name, variant, _tree_digest(HERE, ("units/*", "guest_image.py"))]
    if tool_of(variant) == "bare":
        inputs.append(login_key()[1])
    if tool_of(variant) == "cidag":
        inputs.append(_tree_digest(REPO, ("cidag/**/*", "packaging/deb/*", "scripts/build_deb.py")))
    key = _digest(*inputs)
    out = cache_dir() / f"image-{variant}-{key}.raw"
    img = Image(variant, out, b.kernel, b.initrd)
    if out.exists():
        return img
    # The checkout moves on: keep the newest few (a running guest may still stand on one).
    older = sorted(cache_dir().glob(f"image-{variant}-{'?' * len(key)}.raw"), key=lambda p: p.stat().st_mtime)
    for stale in older[:-2]:
        stale.unlink()
    work = Path(tempfile.mkdtemp(prefix="cidag-vm-", dir=cache_dir()))
    try:
        tree = work / "tree"
        tree.mkdir()
        _run(["tar", "-xf", str(b.tarball), "-C", str(tree)])
        if tool_of(variant) == "cidag":
            _install_cidag(tree)
        if variant in NET_VARIANTS:
            _network_stack(tree, NET_VARIANTS[variant])
        elif tool_of(variant) == "bare":
            # No tool makes host keys there: the image carries them, as an installed system does.
            _run(["chroot", str(tree), "ssh-keygen", "-A"], stdout=subprocess.DEVNULL)
            # ... and the network a tool would bring up: DHCP on the NIC, as installed systems have.
            (tree / "etc/systemd/network/50-dhcp.network").write_text("[Match]\nName=en*\n\n[Network]\nDHCP=yes\n")
            # ... and a user the harness can log in as (the benchmark's login floor).
            _run(["chroot", str(tree), "useradd", "-m", "-s", "/bin/sh", BARE_USER], stdout=subprocess.DEVNULL)
            ssh_dir = tree / "home" / BARE_USER / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text(login_key()[1] + "\n")
            _run(["chroot", str(tree), "chown", "-R", f"{BARE_USER}:{BARE_USER}", f"/home/{BARE_USER}/.ssh"])
            # ... who may power it off, as the cloud-config's user may on the other guests (the reboot row).
            sudoers = tree / "etc/sudoers.d/90-bare-user"
            sudoers.write_text(f"{BARE_USER} ALL=(ALL) NOPASSWD:ALL\n")
            sudoers.chmod(0o440)
        _install_report(tree, variant)
        part = work / "image.raw"
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(part), IMAGE_SIZE], stdout=subprocess.DEVNULL)
        os.replace(part, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return img


BARE_USER = "alice"


def login_key() -> tuple[Path, str]:
    """The harness's own key pair, kept in the cache: the bare image lets BARE_USER log in with it."""
    key = cache_dir() / "login-key"
    if not key.exists():
        tmp = cache_dir() / f"login-key.{os.getpid()}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cidag-vm-login", "-f", str(tmp)],
                       check=True)
        os.replace(Path(str(tmp) + ".pub"), Path(str(key) + ".pub"))
        os.replace(tmp, key)
    return key, Path(str(key) + ".pub").read_text().strip()


def missing_tools() -> list[str]:
    """What this machine lacks to build and boot images (empty when it can)."""
    need = ["mmdebstrap", "mkfs.ext4", "qemu-system-x86_64", "qemu-img", "xorriso", "ssh", "ssh-keygen"]
    out = [tool for tool in need if shutil.which(tool) is None]
    if os.geteuid() != 0:
        out.append("root")
    return out


if __name__ == "__main__":
    for v in sys.argv[1:] or ["cidag"]:
        print(image(v))
