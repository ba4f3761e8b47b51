"""fstab entries and a swap file in the target (cloud-init's cc_mounts).

Capabilities: wants `cloud-config`. Cloud-config keys: `mounts` (each entry
`[device, mountpoint, fstype, options, dump, pass]`, missing or null fields
from `mount_default_fields`), `mount_default_fields`, `swap` (`filename`,
default /swap.img; `size`: bytes, `"512M"`, `"2G"` or `auto`; `maxsize`).

As cloud-init: a short device name gets `/dev/` (`sdb` is /dev/sdb);
`LABEL=`, `UUID=` and `host:/path` are kept as given; an entry whose mount
point is null removes that device's entries. The lines cidag writes carry
`comment=cidag` in their options and replace the ones it wrote before; every
other line of ROOT/etc/fstab is kept. Mount points are made in ROOT.
cloud-init's `ephemeral0`/`swap` names need the platform's block-device
mapping, which cidag does not have: such entries are left out with a warning.

The swap file is allocated (not sparse), 0600, made with `mkswap` (the
host's tool, on the file inside ROOT) and gets a fstab line; an existing
swap file is kept. Only when the root is / are `mount -a` and `swapon` run.
"""
from __future__ import annotations

import math
import os
import re
import shutil

from .. import paths, userdata
from ..api import Context
from . import _run

FIELD = {"type": ["string", "number", "null"]}
SIZE = {"type": ["string", "integer"]}
CLOUD_CONFIG = {
    "mounts": {"type": "array", "items": {"type": "array", "items": FIELD}},
    "mount_default_fields": {"type": "array", "items": FIELD},
    "swap": {"type": "object", "properties": {"filename": {"type": "string"}, "size": SIZE, "maxsize": SIZE}},
}
SETTINGS = {"type": "object", "properties": {}}
MARK = "comment=cidag"
META_NAMES = re.compile(r"(ephemeral\d*|swap)")
SIZE_RE = re.compile(r"(\d*\.?\d+)([BKMGT])")
GB, MB = 1 << 30, 1 << 20


def to_bytes(value) -> int:
    """`2G`, `512M`, `1.5G`, `100` (bytes) -> bytes (cloud-init's human2bytes). Raises ValueError."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    m = SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"invalid size {value!r} (bytes, or a number and B, K, M, G or T)")
    return int(float(m.group(1)) * (1 << (10 * "BKMGT".index(m.group(2)))))


def suggested_swap(mem: int, avail: int, maxsize: int | None) -> int:
    """cloud-init's `size: auto`: memory up to 4G, 4G up to 16G, then sqrt(GB) GB; at most twice
    the memory, a quarter of the free space (or maxsize, within 90% of it)."""
    if maxsize is None:
        maxsize = min(avail // 4, mem * 2)
    elif maxsize > avail * 0.9:
        maxsize = int(avail * 0.9)
    if mem < 4 * GB:
        least = mem
    elif mem < 16 * GB:
        least = 4 * GB
    else:
        least = round(math.sqrt(mem / GB)) * GB
    return min(least, maxsize)


def fstab_entries(mounts: list, defaults: list) -> tuple[list[list[str]], list[str]]:
    """The fstab lines (as fields) for `mounts`, and one warning per entry left out."""
    warnings: list[str] = []
    entries: list[list] = []
    for i, entry in enumerate(mounts):
        if not entry or entry[0] in (None, ""):
            warnings.append(f"mounts[{i}]: no device: left out")
            continue
        dev = str(entry[0])
        if META_NAMES.fullmatch(dev):
            warnings.append(f"mounts[{i}]: {dev!r} names a platform device cidag cannot resolve: left out")
            continue
        if not (dev.startswith("/") or "=" in dev or ":" in dev):
            dev = "/dev/" + dev
        fields = [dev] + list(entry[1:])
        fields += [None] * (6 - len(fields))
        fields = [f if f is not None or j < 2 else defaults[j] for j, f in enumerate(fields[:6])]
        entries.append(fields)
    out: list[list[str]] = []
    removed = set()
    for fields in reversed(entries):  # a null mount point drops the device's entries before it
        if fields[1] is None or fields[0] in removed:
            removed.add(fields[0])
            continue
        row = [str(f) for f in fields]
        if any(not f or any(c.isspace() for c in f) for f in row):
            raise ValueError(f"mounts: invalid entry {row!r} (empty field or blank inside a field)")
        row[3] = f"{row[3]},{MARK}"
        out.append(row)
    return out[::-1], warnings


def _default_options(ctx: Context) -> str:
    systemd = any(paths.confine(ctx.root, p).exists() for p in ("usr/lib/systemd/systemd", "lib/systemd/systemd"))
    return "defaults,nofail,x-systemd.after=cidag.service,_netdev" if systemd else "defaults,nobootwait"


def make_swap(ctx: Context, filename: str, size: int) -> bool:
    """Create the swap file (unless one is there); True when it was made."""
    target = paths.confine(ctx.root, filename)
    if target.is_file() and _is_swap(target):
        ctx.log.info("swap file %s exists: kept", filename)
        return False
    mkswap = shutil.which("mkswap")
    if mkswap is None:
        raise RuntimeError("mkswap not found: swap file not made")
    parent = paths.makedirs(ctx.root, os.path.dirname(filename) or "/")
    tmp = parent / f".{target.name}.cidag-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)  # swapon refuses files with holes
            os.fsync(fd)
        finally:
            os.close(fd)
        res = ctx.run([mkswap, str(tmp)])
        if not res.ok:
            raise RuntimeError(f"mkswap failed: {res.stderr_text().strip()[:200]}")
        os.rename(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    ctx.log.info("swap file %s: %d MiB", filename, size // MB)
    return True


def _is_swap(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(65536)
    return any(head[n - 10:n] in (b"SWAPSPACE2", b"SWAP-SPACE") for n in (4096, 8192, 16384, 65536))


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    if not ({"mounts", "swap"} & set(cc)):
        ctx.log.info("no mounts or swap asked")
        return None
    defaults = list(cc.get("mount_default_fields") or [None, None, "auto", _default_options(ctx), "0", "2"])
    if len(defaults) != 6:
        raise ValueError(f"mount_default_fields: expected 6 fields, got {len(defaults)}")
    rows, warnings = fstab_entries(list(cc.get("mounts") or []), defaults)
    for w in warnings:
        ctx.log.warning("%s", w)
    swap = cc.get("swap") or {}
    swapfile = None
    if swap.get("size"):
        swapfile = str(swap.get("filename") or "/swap.img")
        if not swapfile.startswith("/"):
            raise ValueError(f"swap.filename {swapfile!r} is not an absolute path")
        if swap["size"] == "auto":
            maxsize = to_bytes(swap["maxsize"]) if swap.get("maxsize") else None
            parent = paths.makedirs(ctx.root, os.path.dirname(swapfile) or "/")
            st = os.statvfs(parent)
            size = suggested_swap(_memory(), st.f_frsize * st.f_bfree, maxsize)
        else:
            size = to_bytes(swap["size"])
        if size // MB < 1:
            raise ValueError(f"swap.size {swap['size']!r}: less than 1 MiB")
        make_swap(ctx, swapfile, size // MB * MB)
        rows.append([swapfile, "none", "swap", f"sw,{MARK}", "0", "0"])
    old = (paths.read_file(ctx.root, "etc/fstab") or b"").decode("utf-8", "replace").splitlines()
    kept = [ln for ln in old if MARK not in ln]
    new = kept + ["\t".join(r) for r in rows]
    paths.write_file(ctx.root, "etc/fstab", "\n".join(new) + "\n" if new else "", mode=0o644)
    for r in rows:
        if r[1].startswith("/"):
            paths.makedirs(ctx.root, r[1])
    ctx.log.info("fstab: %d cidag line(s) (%d before)", len(rows), len(old) - len(kept))
    if _run.is_host_root(ctx):
        _activate(ctx, swapfile, changed=new != old)
    return None


def _memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _activate(ctx: Context, swapfile: str | None, changed: bool) -> None:
    """On the running system only: swap on, and mount what fstab now lists (as cloud-init)."""
    out = _run.Output(ctx)
    if swapfile and swapfile not in open("/proc/swaps").read():
        if problem := _run.run_in_target(ctx, out, ["swapon", swapfile]):
            ctx.log.warning("%s", problem)
    if changed:
        if shutil.which("systemctl"):
            _run.run_in_target(ctx, out, ["systemctl", "daemon-reload"])
        if problem := _run.run_in_target(ctx, out, ["mount", "-a"]):
            ctx.log.warning("%s", problem)
    out.close()
