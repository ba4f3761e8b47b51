"""Grow the partitions holding the target's file systems to fill their disks (cloud-init's cc_growpart).

Capabilities: wants `cloud-config`. Cloud-config key: `growpart` with `mode`
(`auto` (default), `growpart`, `off`/false; `gpart` is FreeBSD's and not
supported), `devices` (default `["/"]`: mount points in the target, or
`/dev/...` devices), `ignore_growroot_disabled`. ROOT/etc/growroot-disabled
turns it off, as in cloud-init. Runs every boot in the shipped manifest.

Uses cloud-utils' `growpart DISK PARTITION` (a `--dry-run` first). Skipped
cleanly, with the reason in the log, where there is nothing to grow: the
root is a plain directory (its file system is the host's, see _blockdev.py),
the device is not a partition (LVM, a whole disk, overlay, tmpfs), the
partition already fills the disk, or (`mode: auto`) growpart is not installed.
"""
from __future__ import annotations

import shutil

from .. import paths, userdata
from ..api import Context
from . import _blockdev

CLOUD_CONFIG = {
    "growpart": {"type": "object", "properties": {
        "mode": {"enum": ["auto", "growpart", "gpart", "off", False]},
        "devices": {"type": "array", "items": {"type": "string"}},
        "ignore_growroot_disabled": {"type": "boolean"},
    }},
}
SETTINGS = {"type": "object", "properties": {}}


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    cfg = cc.get("growpart") or {}
    mode = cfg.get("mode", "auto")
    if mode in (False, "off"):
        ctx.log.info("growpart: mode off")
        return None
    if mode == "gpart":
        raise ValueError("growpart.mode 'gpart' (FreeBSD) is not supported")
    if paths.confine(ctx.root, "etc/growroot-disabled").exists() and not cfg.get("ignore_growroot_disabled"):
        ctx.log.info("growpart: /etc/growroot-disabled exists: nothing done")
        return None
    reason = _blockdev.not_own_device(str(ctx.root), _blockdev.MOUNTINFO)
    if reason:
        ctx.log.info("growpart skipped: %s", reason)
        return None
    tool = shutil.which("growpart")
    if tool is None:
        if mode == "growpart":
            raise RuntimeError("growpart (cloud-utils) is not installed")
        ctx.log.info("growpart skipped: growpart (cloud-utils) is not installed")
        return None
    problems = []
    for dev in cfg.get("devices") or ["/"]:
        if problem := _grow(ctx, tool, dev):
            problems.append(problem)
    if problems:
        raise RuntimeError("; ".join(problems))
    return None


def _grow(ctx: Context, tool: str, dev: str) -> str | None:
    if dev.startswith("/dev/"):
        device = dev
    else:
        m = _blockdev.mount_of(str(paths.confine(ctx.root, dev)), _blockdev.MOUNTINFO)
        if m is None or not m.source.startswith("/dev/"):
            ctx.log.info("growpart %s: not on a block device (%s): nothing to grow", dev, m.fstype if m else "?")
            return None
        device = m.source
    part = _blockdev.partition_of(device, _blockdev.SYSFS_BLOCK)
    if part is None:
        ctx.log.info("growpart %s: %s is not a partition: nothing to grow", dev, device)
        return None
    disk, number = part
    dry = ctx.run([tool, "--dry-run", disk, str(number)])
    if dry.returncode == 1 and "NOCHANGE" in dry.stdout_text() + dry.stderr_text():
        ctx.log.info("growpart %s: %s partition %d already fills the disk", dev, disk, number)
        return None
    if not dry.ok:
        return f"growpart --dry-run {disk} {number}: exit {dry.returncode}: {_last(dry)}"
    res = ctx.run([tool, disk, str(number)])
    if not res.ok:
        return f"growpart {disk} {number}: exit {res.returncode}: {_last(res)}"
    ctx.log.info("growpart %s: %s partition %d grown: %s", dev, disk, number, _last(res))
    ctx.output.append(res.stdout_text())
    return None


def _last(res) -> str:
    lines = (res.stdout_text() + res.stderr_text()).strip().splitlines()
    return lines[-1][:200] if lines else ""

