"""Microsoft Azure: IMDS, ovf-env.xml on the provisioning disk, and the wireserver's "report ready".

- IMDS: `GET /metadata/instance?api-version=V` with `Metadata: true` (refused
  without it): vmId (the instance id), computer name, admin user name, SSH
  keys, zone, userData.
- ovf-env.xml: read from `path` (a directory holding it), else from `device`
  mounted read-only (UDF or ISO 9660, as the config drive's ISO). It gives the
  host name, the user name and password, CustomData (user data) and SSH keys. It
  is optional: without it IMDS alone provisions the VM.
- report-ready: an operation (like openstack's post-password) that fetches the
  wireserver's goal state (`GET /machine/?comp=goalstate`) and POSTs a Health
  document with state Ready for its container and role instance
  (`POST /machine?comp=health`). The `report-ready` module calls it once the
  login milestone's modules have ended: Azure counts the VM as provisioned from
  then on, and a VM never reported is failed by the platform after its timeout.

The user name becomes vendor-data `#cloud-config` `user: {name: ...}` (user-data
still wins), so the default user, its keys and the admin password go to it.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from .. import http, platform_check
from ..api import Context
from . import _common

IMDS_HEADERS = {"Metadata": "true"}
WIRE_HEADERS = {"x-ms-agent-name": "WALinuxAgent", "x-ms-version": "2012-11-30"}
GOAL_STATE = "machine/?comp=goalstate"
HEALTH = "machine?comp=health"
OVF = "ovf-env.xml"

SETTINGS = _common.http_settings(
    "http://169.254.169.254", "base URL of IMDS",
    api_version={"type": "string", "default": "2021-08-01", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                 "description": "IMDS api-version"},
    wireserver={"type": "string", "default": "http://168.63.129.16", "pattern": "^https?://",
                "description": "base URL of the wireserver (report ready)"},
    report_timeout={"format": "duration", "default": 60, "description": "deadline of one report-ready call"},
    path={"type": "string", "default": "/run/cidag/azure",
          "description": "directory holding ovf-env.xml (tried before the device)"},
    device={"type": ["string", "null"], "default": "/dev/sr0",
            "description": "provisioning disk holding ovf-env.xml, mounted read-only; null: none"},
    fstypes={"type": "string", "default": "udf,iso9660", "description": "filesystem types passed to mount -t"},
)
CAPABILITIES = ("instance-id", "hostname", "public-keys", "user-data", "vendor-data", "admin-password",
                "availability-zone", "report-ready")
SECRETS = frozenset({"admin-password"})


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read IMDS and ovf-env.xml; raise SourceUnavailable when this is not Azure."""
    s = ctx.settings
    ctx.log.info("platform check: %s", platform_check.check("azure", s))
    ovf = _read_ovf(ctx)
    path = f"metadata/instance?api-version={s['api_version']}"
    docs = _common.fetch_documents(ctx, None, [path], headers=IMDS_HEADERS)
    imds = _common.load_json(docs[path], f"{s['url'].rstrip('/')}/{path}")
    caps = caps_from(imds, ovf, f"{s['url'].rstrip('/')}/{path}")
    caps["report-ready"] = reporter(s)
    return caps


def caps_from(imds: Any, ovf: dict, where: str) -> dict:
    """Capabilities from the IMDS document and the fields of ovf-env.xml (ovf wins where both say)."""
    compute = imds.get("compute") if isinstance(imds, dict) else None
    if not isinstance(compute, dict):
        raise ValueError(f"{where}: no 'compute' object")
    profile = compute.get("osProfile") if isinstance(compute.get("osProfile"), dict) else {}
    keys = [k.get("keyData", "") for k in compute.get("publicKeys") or [] if isinstance(k, dict)]
    caps = _common.identity_caps(
        compute.get("vmId"), f"{where} compute.vmId",
        hostname=ovf.get("HostName") or profile.get("computerName") or compute.get("name"),
        keys=keys + ovf.get("keys", []), zone=compute.get("zone") or compute.get("location"))
    if ovf.get("CustomData"):
        caps["user-data"] = _common.as_text_or_bytes(_common.base64_data(ovf["CustomData"], f"{OVF} CustomData"))
    elif isinstance(compute.get("userData"), str) and compute["userData"]:
        caps["user-data"] = _common.as_text_or_bytes(_common.base64_data(compute["userData"], f"{where} userData"))
    if ovf.get("UserPassword"):
        caps["admin-password"] = ovf["UserPassword"]
    user = ovf.get("UserName") or profile.get("adminUsername")
    config: dict[str, Any] = {}
    if isinstance(user, str) and user.strip():
        config["user"] = {"name": user.strip()}
    if ovf.get("DisableSshPasswordAuthentication", "").lower() == "false" or (
            "DisableSshPasswordAuthentication" not in ovf and profile.get("disablePasswordAuthentication") == "false"):
        config["ssh_pwauth"] = True
    if config:
        caps["vendor-data"] = "#cloud-config\n" + json.dumps(config) + "\n"  # JSON is YAML
    return caps


def _read_ovf(ctx: Context) -> dict:
    """The fields of ovf-env.xml from the directory or the provisioning disk; {} when there is none."""
    s = ctx.settings
    base = Path(s["path"])
    if (base / OVF).is_file():
        return parse_ovf(_common.read_inside(base, OVF, cap=1 << 20), f"{base / OVF}")
    device = Path(s["device"]) if s.get("device") else None
    if device is None or not device.exists():
        ctx.log.info("no %s (in %s or on %s): IMDS only", OVF, base, s.get("device"))
        return {}
    try:
        with _common.mounted(ctx, device, s["fstypes"]) as mnt:
            data = _common.read_inside(mnt, OVF, cap=1 << 20)
    except RuntimeError as exc:  # an empty drive, another disk: IMDS still provisions the VM
        ctx.log.warning("%s; IMDS only", exc)
        return {}
    if data is None:
        ctx.log.info("%s holds no %s: IMDS only", device, OVF)
        return {}
    return parse_ovf(data, f"{device}:{OVF}")


def parse_ovf(data: bytes | None, where: str) -> dict:
    """HostName, UserName, UserPassword, CustomData, DisableSshPasswordAuthentication and `keys`.

    Elements are matched by local name (the namespaces vary). Raises ValueError on bad XML
    (the message names a line and column, never the content).
    """
    import xml.etree.ElementTree as ET  # only where the VM is Azure: not on every boot's import

    try:
        root = ET.fromstring(data or b"")
    except ET.ParseError as exc:
        raise ValueError(f"{where}: invalid XML: {exc}") from None
    out: dict[str, Any] = {"keys": []}
    for el in root.iter():
        name = el.tag.rsplit("}", 1)[-1]
        text = (el.text or "").strip()
        if name in ("HostName", "UserName", "UserPassword", "CustomData", "DisableSshPasswordAuthentication") and text:
            out[name] = text
        elif name == "PublicKey":
            value = next((c.text for c in el if c.tag.rsplit("}", 1)[-1] == "Value" and c.text), None)
            if value:
                out["keys"].append(value.strip())
    return out


def reporter(settings: dict) -> Callable[..., str]:
    """The `report-ready` operation bound to the wireserver in `settings`."""

    def report_ready(*, timeout: float | None = None, cancelled: threading.Event | None = None) -> str:
        """Fetch the goal state, POST Health Ready for it; return one line saying what was reported.

        Raises HTTPFailure / SourceUnavailable / ValueError (one line) when it cannot.
        """
        with _common.operation_client(
            settings["wireserver"], settings,
            timeout if timeout is not None else settings["report_timeout"], cancelled,
        ) as client:
            client.headers.update(WIRE_HEADERS)
            resp = client.get(GOAL_STATE)
            _common.expect_ok(resp)
            state = goal_state(resp.body, resp.url)
            resp = client.request("POST", HEALTH, body=health_document(**state),
                                  headers={"Content-Type": "text/xml; charset=utf-8"})
            if not 200 <= resp.status < 300:
                raise http.HTTPFailure(f"{resp.url}: reporting ready got HTTP {resp.status} {resp.reason}".rstrip())
        return f"reported ready to {settings['wireserver']} (incarnation {state['incarnation']})"

    return report_ready


def goal_state(data: bytes, where: str) -> dict:
    """incarnation, container_id and instance_id of a wireserver GoalState document."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: invalid goal state XML: {exc}") from None
    found = {el.tag.rsplit("}", 1)[-1]: (el.text or "").strip() for el in root.iter()}
    out = {"incarnation": found.get("Incarnation"), "container_id": found.get("ContainerId"),
           "instance_id": found.get("InstanceId")}
    missing = [k for k, v in out.items() if not v]
    if missing:
        raise ValueError(f"{where}: goal state without {', '.join(missing)}")
    return out


def health_document(incarnation: str, container_id: str, instance_id: str) -> bytes:
    """The Health report (state Ready) the wireserver takes, as WALinuxAgent and cloud-init send it."""
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
        f"  <GoalStateIncarnation>{escape(incarnation)}</GoalStateIncarnation>\n"
        "  <Container>\n"
        f"    <ContainerId>{escape(container_id)}</ContainerId>\n"
        "    <RoleInstanceList>\n"
        "      <Role>\n"
        f"        <InstanceId>{escape(instance_id)}</InstanceId>\n"
        "        <Health><State>Ready</State></Health>\n"
        "      </Role>\n"
        "    </RoleInstanceList>\n"
        "  </Container>\n"
        "</Health>\n"
    ).encode()
