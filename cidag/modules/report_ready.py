"""Tell the platform the VM is provisioned: call the `report-ready` operation (Azure's wireserver).

Capabilities: wants `report-ready` (an operation: `ctx.caps["report-ready"](timeout=, cancelled=)`,
returning one line). No cloud-config key. Shipped after the login milestone's modules
(modules.yaml), per boot: Azure counts the VM as provisioned once reported, so the report
says a login can succeed; on other clouds no source offers the capability and the module
ends ok at once, with nothing to report.
"""
from __future__ import annotations

from ..api import Context

SETTINGS = {"type": "object", "properties": {}}


def run(ctx: Context) -> None:
    """Report ready; fail with one line when the platform cannot be told."""
    report = ctx.caps.get("report-ready")
    if report is None:
        ctx.log.info("no report-ready operation (not a platform that waits for one): nothing to report")
        return
    if not callable(report):
        raise RuntimeError(f"report-ready is not an operation (a {type(report).__name__})")
    try:
        line = report(timeout=ctx.remaining(), cancelled=ctx.cancelled)
    except Exception as exc:  # noqa: BLE001 - the platform's answer, in one line
        raise RuntimeError(f"reporting ready failed: {str(exc)[:300]}") from None
    ctx.log.info("%s", line or "reported ready")
