"""A fast platform check before any network probe, the way cloud-init's ds-identify reads DMI.

It reads four DMI fields (`sys_vendor`, `product_name`, `chassis_asset_tag`,
`product_uuid`) under `SYSFS/class/dmi/id/` and the kernel command line. On the
wrong platform the source is unavailable in milliseconds, instead of at its
deadline, so an absent but more preferred cloud never holds back
`select: preferred`.

Order of evidence:
1. a `ds=` hint on the kernel command line (`ds=`, `ci.ds=`, `ci.datasource=`;
   several names separated by `,`; options after `;`): naming this platform
   confirms it, naming only others rules it out;
2. DMI: a field that identifies this platform confirms it; DMI present but
   identifying nothing of this platform rules it out;
3. no DMI at all (containers, some ARM boards): the check cannot tell, so it
   lets the probe go on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .errors import SourceUnavailable

DMI_FIELDS = ("sys_vendor", "product_name", "chassis_asset_tag", "product_uuid")

# Settings every network source accepts (merged into their SETTINGS schema).
CHECK_SETTINGS = {
    "platform_check": {"type": "boolean", "default": True,
                       "description": "read DMI and the kernel command line first; false for clouds the check does not know"},
    "sysfs_root": {"type": "string", "default": "/sys",
                   "description": "where DMI is read: SYSFS/class/dmi/id/*"},
    "cmdline": {"type": "string", "default": "/proc/cmdline",
                "description": "file holding the kernel command line (ds= hints)"},
}

_OPENSTACK_TAGS = {"openstack nova", "openstack compute", "opentelekomcloud",
                   "sap ccloud vm", "huaweicloud"}


def _openstack(dmi: Mapping[str, str]) -> bool:
    return (
        dmi.get("product_name", "").lower() in _OPENSTACK_TAGS
        or dmi.get("chassis_asset_tag", "").lower() in _OPENSTACK_TAGS
        or dmi.get("sys_vendor", "").lower() == "openstack foundation"
    )


def _ec2(dmi: Mapping[str, str]) -> bool:
    return (
        dmi.get("sys_vendor", "").lower() == "amazon ec2"
        or dmi.get("product_uuid", "").lower().startswith("ec2")
        or dmi.get("chassis_asset_tag", "").lower() == "amazon ec2"
        # Xen-based instances: the hypervisor uuid is readable when product_uuid is not.
        or dmi.get("hypervisor_uuid", "").lower().startswith("ec2")
    )


def _field(name: str, *values: str) -> Callable[[Mapping[str, str]], bool]:
    """A matcher: DMI `name` equals one of `values` (case-insensitive)."""
    wanted = frozenset(v.lower() for v in values)
    return lambda dmi: dmi.get(name, "").lower() in wanted


# As ds-identify: GCE by product name, Azure and Oracle by chassis asset tag, Hetzner by vendor.
_gce = _field("product_name", "Google Compute Engine")
_azure = _field("chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77")
_oracle = _field("chassis_asset_tag", "OracleCloud.com")
_hetzner = _field("sys_vendor", "Hetzner")


@dataclass(frozen=True)
class Platform:
    """What identifies one platform: its ds= names and a DMI matcher."""

    title: str
    ds_names: frozenset[str]
    dmi_match: Callable[[Mapping[str, str]], bool]


PLATFORMS = {
    "openstack": Platform("OpenStack", frozenset({"openstack", "configdrive"}), _openstack),
    "ec2": Platform("EC2", frozenset({"ec2"}), _ec2),
    "gce": Platform("GCE", frozenset({"gce"}), _gce),
    "azure": Platform("Azure", frozenset({"azure"}), _azure),
    "oracle": Platform("Oracle Cloud", frozenset({"oracle"}), _oracle),
    "hetzner": Platform("Hetzner Cloud", frozenset({"hetzner"}), _hetzner),
}


def read_dmi(sysfs_root: str | Path) -> dict[str, str]:
    """The DMI fields that can be read (stripped); {} when there is no DMI."""
    base = Path(sysfs_root) / "class" / "dmi" / "id"
    out: dict[str, str] = {}
    for name in DMI_FIELDS:
        try:
            out[name] = (base / name).read_text(errors="replace").strip()
        except OSError:
            # product_uuid is root-only on most systems; the others tell enough.
            continue
    if out:
        try:
            out["hypervisor_uuid"] = (Path(sysfs_root) / "hypervisor" / "uuid").read_text().strip()
        except OSError:
            pass
    return out


def read_cmdline(path: str | Path) -> str:
    """The kernel command line, or "" when it cannot be read."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def ds_hints(cmdline: str) -> list[tuple[str, dict[str, str]]]:
    """The `ds=` hints of a kernel command line: [(name lower-cased, {option: value})].

    `ds=nocloud;s=http://10.0.0.1/seed/` gives [("nocloud", {"s": "http://10.0.0.1/seed/"})].
    """
    hints = []
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("ds", "ci.ds", "ci.datasource"):
            continue
        value = value.strip("'\"")
        head, _, opts = value.partition(";")
        options = {}
        for opt in filter(None, opts.split(";")):
            k, _, v = opt.partition("=")
            options[k.strip()] = v.strip()
        for name in filter(None, head.split(",")):
            hints.append((re.sub(r"[^a-z0-9]", "", name.lower()), options))
    return hints


def check(platform: str, settings: Mapping) -> str:
    """Return why the probe may go on; raise SourceUnavailable when this is not `platform`.

    `settings` holds CHECK_SETTINGS keys. Reads a handful of small files: milliseconds.
    """
    spec = PLATFORMS[platform]
    if not settings.get("platform_check", True):
        return "platform check off"
    hints = [name for name, _ in ds_hints(read_cmdline(settings.get("cmdline", "/proc/cmdline")))]
    if hints:
        if spec.ds_names & set(hints):
            return f"kernel command line names {platform}"
        raise SourceUnavailable(
            f"not {spec.title}: kernel command line says ds={','.join(hints)}"
        )
    dmi = read_dmi(settings.get("sysfs_root", "/sys"))
    if not dmi:
        return "no DMI to check"
    if spec.dmi_match(dmi):
        return f"DMI says {spec.title}"
    seen = ", ".join(f"{k}={v!r}" for k, v in dmi.items() if k in DMI_FIELDS[:3] and v)
    raise SourceUnavailable(
        f"not {spec.title}: DMI {seen or 'is empty'} (platform_check: false to probe anyway)"
    )
