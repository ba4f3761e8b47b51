"""Which file system and block device hold a path of the target (for growpart and resizefs).

The tools that grow a partition or a file system act on a device, not on a
directory tree: they are only allowed to touch the target's own device. With
`--root /` that is the running system's; with another root, only when ROOT
is itself a mount point (an image mounted there). A ROOT that is a plain
directory lives on the host's file system, which a test or an image build
must never grow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"
SYSFS_BLOCK = "/sys/class/block"


@dataclass
class Mount:
    mount_point: str
    source: str
    fstype: str


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts(mountinfo: str = MOUNTINFO) -> list[Mount]:
    """The mounts of this process, in mount order."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            left, sep, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if not sep or len(fields) < 5 or len(tail) < 2:
                continue
            out.append(Mount(_unescape(fields[4]), _unescape(tail[1]), tail[0]))
    return out


def mount_of(path: str, mountinfo: str = MOUNTINFO) -> Mount | None:
    """The mount holding `path` (a host path): the last-mounted one with the longest matching prefix."""
    path = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts(mountinfo):
        mp = m.mount_point.rstrip("/") or "/"
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


def not_own_device(root: str, mountinfo: str = MOUNTINFO) -> str | None:
    """Why the target's devices must not be touched (None: they may be)."""
    real = os.path.realpath(root)
    if real == "/":
        return None
    m = mount_of(real, mountinfo)
    if m is None or (m.mount_point.rstrip("/") or "/") != real:
        return f"{real} is not a mount point: its file system is the host's, not the target's"
    return None


def partition_of(device: str, sysfs: str = SYSFS_BLOCK) -> tuple[str, int] | None:
    """(disk device, partition number) for a partition device such as /dev/vda1; None if it is none."""
    name = os.path.basename(os.path.realpath(device))
    part_file = os.path.join(sysfs, name, "partition")
    try:
        with open(part_file) as f:
            number = int(f.read().strip())
    except (OSError, ValueError):
        return None
    disk = os.path.basename(os.path.dirname(os.path.realpath(os.path.join(sysfs, name))))
    return f"/dev/{disk}", number
