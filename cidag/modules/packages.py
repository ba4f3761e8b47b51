"""Update, upgrade and install the target's packages with its own package manager (apt or dnf).

Capabilities: wants `cloud-config`. Cloud-config keys (cloud-init's
package_update_upgrade_install): `packages` (`name`, `[name, version]`, or
`{apt: [...]}`; `snap:` lists are refused), `package_update`,
`package_upgrade`, and the older `apt_update`, `apt_upgrade`.

As cloud-init: the package lists are updated first whenever packages are to
be installed or upgraded; then the upgrade (apt: `dist-upgrade`); then the
install. Each step runs even if one before failed; the module then fails
naming the first failure. The manager is the one found in ROOT (setting
`manager`); it runs inside the target (`chroot ROOT` when the root is not /,
cidag/modules/_run.py), so a test or an image build never changes the host.
"""
from __future__ import annotations

from .. import userdata
from ..api import Context
from . import _run

PACKAGE = {"type": ["string", "array"], "items": {"type": ["string", "number"]}}
CLOUD_CONFIG = {
    "packages": {"type": "array", "items": {
        "type": ["string", "array", "object"], "items": {"type": ["string", "number"]},
        "properties": {"apt": {"type": "array", "items": PACKAGE}, "snap": {"type": "array", "items": PACKAGE}}}},
    "package_update": {"type": "boolean"},
    "package_upgrade": {"type": "boolean"},
    "apt_update": {"type": "boolean"},
    "apt_upgrade": {"type": "boolean"},
}
SETTINGS = {
    "type": "object",
    "properties": {
        "manager": {"enum": ["auto", "apt", "dnf"], "default": "auto",
                    "description": "auto: apt-get if the target has it, else dnf"},
        "packages": {"type": "array", "items": PACKAGE, "default": [],
                     "description": "installed with the cloud-config packages"},
    },
}

APT = ["apt-get", "--option=Dpkg::Options::=--force-confold", "--option=Dpkg::options::=--force-unsafe-io",
       "--assume-yes", "--quiet"]
DNF = ["dnf", "--assumeyes", "--quiet"]
COMMANDS = {  # manager -> step -> argv (packages appended to install)
    "apt": {"update": APT + ["update"], "upgrade": APT + ["dist-upgrade"], "install": APT + ["install"]},
    "dnf": {"update": DNF + ["makecache"], "upgrade": DNF + ["upgrade"], "install": DNF + ["install"]},
}
ENV = {"apt": {"DEBIAN_FRONTEND": "noninteractive"}, "dnf": {}}


def package_names(entries: list, manager: str) -> list[str]:
    """cloud-config `packages` as arguments for `manager`: `name`, `name=version` (apt), `name-version` (dnf).

    Raises ValueError for snap packages and malformed entries.
    """
    out: list[str] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            if entry.get("snap"):
                raise ValueError(f"packages[{i}].snap: snap packages are not supported")
            out += package_names(entry.get("apt") or [], manager)
            continue
        if isinstance(entry, list):
            if len(entry) != 2:
                raise ValueError(f"packages[{i}]: expected [name, version], got {len(entry)} item(s)")
            name, version = (str(x) for x in entry)
            out.append(f"{name}={version}" if manager == "apt" else f"{name}-{version}")
            continue
        out.append(str(entry))
    for name in out:
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise ValueError(f"invalid package name {name!r}")
    return out


def detect(ctx: Context) -> str | None:
    """The package manager the target has, per the `manager` setting."""
    wanted = ctx.settings.get("manager", "auto")
    if wanted != "auto":
        return wanted
    for manager, tool in (("apt", "apt-get"), ("dnf", "dnf")):
        if _run.target_has(ctx, tool):
            return manager
    return None


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    wanted = list(ctx.settings.get("packages") or []) + list(cc.get("packages") or [])
    upgrade = bool(cc.get("package_upgrade") or cc.get("apt_upgrade"))
    update = bool(cc.get("package_update") or cc.get("apt_update")) or upgrade or bool(wanted)
    if not update:
        ctx.log.info("no packages to install, no update or upgrade asked")
        return None
    manager = detect(ctx)
    if manager is None:
        raise RuntimeError(f"no package manager (apt-get or dnf) in the target {ctx.root}")
    names = package_names(wanted, manager)
    steps = [("update", [])] + ([("upgrade", [])] if upgrade else []) + ([("install", names)] if names else [])
    _run.run_each(ctx, steps, lambda out, step: _run.run_in_target(
        ctx, out, COMMANDS[manager][step[0]] + step[1], env=ENV[manager]), f"{manager} step(s)")
    if names:
        ctx.log.info("%s: %d package(s) installed", manager, len(names))
    return None
