"""A reboot of a known instance: sshd need not wait for cidag when a login has nothing to wait for.

On a first boot logins wait for the `login` milestone (users, keys, host keys):
`cidag-login.target` is ordered after cidag.service (started at that milestone)
and before sshd. On a reboot of the same instance every module of that milestone
has already run (they are per-instance), so the wait buys nothing and costs a
Python start-up on every boot. A run that ends with every `login` module done
for this instance writes STATE/login-identity with the machine's SMBIOS UUID;
at the next boot the generator (cidag/data/cidag-generator, a shell script run
by systemd before any unit) masks cidag-login.target for that boot when the
UUID still matches, and sshd starts as on a machine without cidag. cidag still
runs on that boot as on any other.

The UUID is what tells a reboot from a new instance made from a captured image
(cloud-init's `instance_id_matches_system_uuid` is the same test): clouds give
every instance its own. Missing or placeholder UUIDs never match, so such
machines always wait. Each run removes the file before it starts and writes it
again only if the milestone's modules all ended well, so a run cut short or a
failed login module makes the next boot wait again (docs/systemd.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .state import atomic_write

IDENTITY = "login-identity"
DMI_UUID = "sys/class/dmi/id/product_uuid"
# Firmware placeholders many machines share: never an instance's identity.
PLACEHOLDER_UUIDS = frozenset({
    "",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
})
ONE_TIME = ("per-instance", "once")  # frequencies whose work is not done again on a reboot
ENDED_WELL = ("ok", "skipped")


def system_uuid(root: str | Path) -> str | None:
    """ROOT/sys/class/dmi/id/product_uuid, lower case; None when absent or a placeholder."""
    try:
        with open(Path(root) / DMI_UUID, "rb") as f:
            text = f.read(100).decode("ascii", "replace").strip().lower()
    except OSError:
        return None
    return None if text in PLACEHOLDER_UUIDS else text


def forget(state_dir: str | Path) -> None:
    """Before a run: the next boot waits for `login` unless this run ends well."""
    try:
        os.unlink(Path(state_dir) / IDENTITY)
    except FileNotFoundError:
        pass


def remember(state_dir: str | Path, root: str | Path, record: Mapping[str, Any],
             frequencies: Mapping[str, str], milestone: str = "login") -> bool:
    """After a run: write STATE/login-identity if a reboot's login has nothing to wait for.

    That is: `milestone` was reached, each of its modules ended ok or was skipped (none
    failed, timed out or was interrupted) and runs at most once per instance
    (`frequencies`: module name -> frequency), and the machine has a real SMBIOS UUID.
    Returns whether it was written."""
    entry = (record.get("milestones") or {}).get(milestone)
    if not isinstance(entry, dict) or entry.get("reached_s") is None or record.get("result") == "interrupted":
        return False
    members = entry.get("modules") or []
    status = {n["id"]: n["status"] for n in record.get("nodes", [])}
    for name in members:
        if frequencies.get(name) not in ONE_TIME or status.get(f"module:{name}") not in ENDED_WELL:
            return False
    uuid = system_uuid(root)
    if uuid is None:
        return False
    text = f"{uuid}\n# the SMBIOS UUID of instance {record.get('instance_id')}: a reboot with it need not wait for cidag\n"
    atomic_write(Path(state_dir) / IDENTITY, text.encode())
    return True
