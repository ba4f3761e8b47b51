"""Grow the target's root file system to fill its partition (cloud-init's cc_resizefs).

Capabilities: wants `cloud-config`. Cloud-config key: `resize_rootfs` (true
(default), false, `noblock`; cidag runs it in the node either way: the DAG
already lets the rest go on). Runs every boot in the shipped manifest, after
growpart.

ext2/3/4: `resize2fs DEVICE`; xfs: `xfs_growfs MOUNTPOINT`; btrfs: `btrfs
filesystem resize max MOUNTPOINT`. Skipped cleanly, with the reason in the
log, where there is nothing to grow: the root is a plain directory (its file
system is the host's, see _blockdev.py), another file system type (overlay,
tmpfs...), a device cidag cannot find, or the tool is not installed.
"""
from __future__ import annotations

import os
import shutil

from .. import userdata
from ..api import Context
from . import _blockdev

CLOUD_CONFIG = {"resize_rootfs": {"enum": [True, False, "noblock"]}}
SETTINGS = {"type": "object", "properties": {}}


def command(m: _blockdev.Mount) -> list[str] | str:
    """The resize command for a mount, or the reason there is none."""
    if m.fstype in ("ext2", "ext3", "ext4"):
        if not os.path.exists(m.source):
            return f"device {m.source} not found"
        return ["resize2fs", m.source]
    if m.fstype == "xfs":
        return ["xfs_growfs", m.mount_point]
    if m.fstype == "btrfs":
        return ["btrfs", "filesystem", "resize", "max", m.mount_point]
    return f"{m.fstype} file system: nothing to grow"


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    if cc.get("resize_rootfs", True) is False:
        ctx.log.info("resize_rootfs is false")
        return None
    reason = _blockdev.not_own_device(str(ctx.root), _blockdev.MOUNTINFO)
    m = None if reason else _blockdev.mount_of(str(ctx.root), _blockdev.MOUNTINFO)
    argv = reason or ("no mount found" if m is None else command(m))
    if isinstance(argv, list) and shutil.which(argv[0]) is None:
        argv = f"{argv[0]} is not installed"
    if isinstance(argv, str):
        ctx.log.info("resizefs skipped: %s", argv)
        return None
    res = ctx.run(argv)
    text = (res.stdout_text() + res.stderr_text()).strip()
    if text:
        ctx.output.append(text[-4000:] + "\n")
    if not res.ok:
        raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}: {text.splitlines()[-1][:200] if text else ''}")
    ctx.log.info("%s (%s) resized", m.mount_point, m.fstype)
    return None
