"""Add trusted CA certificates to the target (cloud-init's cc_ca_certs).

Capabilities: wants `cloud-config`. Cloud-config keys: `ca_certs` (and the
older `ca-certs`) with `trusted` (PEM certificates) and `remove_defaults`
(also spelt `remove-defaults`).

Debian family (the target has update-ca-certificates): each certificate goes
to ROOT/usr/local/share/ca-certificates/cidag-ca-cert-N.crt (the ones a
previous run wrote are replaced); `remove_defaults` prefixes every entry of
ROOT/etc/ca-certificates.conf with `!` and tells debconf not to trust new
ones, as cloud-init does; then `update-ca-certificates` runs inside the
target. RHEL family (update-ca-trust): ROOT/usr/share/pki/ca-trust-source/
anchors/, then `update-ca-trust`; `remove_defaults` is refused there (it
would delete the distro's trust store). A target with neither tool fails
the module after the files are written.
"""
from __future__ import annotations

from .. import paths, userdata
from ..api import Context
from . import _run

CA = {"type": "object", "properties": {
    "trusted": {"type": "array", "items": {"type": "string"}},
    "remove_defaults": {"type": "boolean"},
    "remove-defaults": {"type": "boolean"},
}}
CLOUD_CONFIG = {"ca_certs": CA, "ca-certs": CA}
SETTINGS = {"type": "object", "properties": {}}
DEBIAN_DIR = "usr/local/share/ca-certificates"
RHEL_DIR = "usr/share/pki/ca-trust-source/anchors"
PREFIX = "cidag-ca-cert-"
HEADER = "# Modified by cidag to deselect certs due to user-data"


def disable_defaults(text: str) -> str:
    """ca-certificates.conf with every certificate entry deselected (`!`), comments kept."""
    out, added = [], HEADER in text.splitlines()
    for line in text.splitlines():
        if line == "" or line[0] in "#!":
            out.append(line)
        else:
            if not added:
                out.append(HEADER)
                added = True
            out.append("!" + line)
    return "\n".join(out) + "\n"


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    cfg = cc.get("ca_certs") or cc.get("ca-certs")
    if not cfg:
        ctx.log.info("no ca_certs")
        return None
    trusted = [str(c) for c in cfg.get("trusted") or []]
    for i, cert in enumerate(trusted):
        if "-----BEGIN CERTIFICATE-----" not in cert or "-----END CERTIFICATE-----" not in cert:
            raise ValueError(f"ca_certs.trusted[{i}] is not a PEM certificate")
    remove = bool(cfg.get("remove_defaults", cfg.get("remove-defaults", False)))
    rhel = not _run.target_has(ctx, "update-ca-certificates") and _run.target_has(ctx, "update-ca-trust")
    if remove and rhel:
        raise ValueError("ca_certs.remove_defaults is not supported on targets using update-ca-trust")
    folder = RHEL_DIR if rhel else DEBIAN_DIR
    certdir = paths.makedirs(ctx.root, folder)
    for old in certdir.glob(PREFIX + "*.crt"):
        if old.is_file() and not old.is_symlink():
            old.unlink()
    for i, cert in enumerate(trusted, 1):
        paths.write_file(ctx.root, f"{folder}/{PREFIX}{i}.crt", cert.strip() + "\n", mode=0o644)
    out = _run.Output(ctx)
    try:
        if remove:
            conf = paths.read_file(ctx.root, "etc/ca-certificates.conf")
            if conf:
                paths.write_file(ctx.root, "etc/ca-certificates.conf",
                                 disable_defaults(conf.decode("utf-8", "replace")), mode=0o644)
            if _run.target_has(ctx, "debconf-set-selections"):
                argv = ["sh", "-c", "echo 'ca-certificates ca-certificates/trust_new_crts select no' | "
                                    "debconf-set-selections"]
                if problem := _run.run_in_target(ctx, out, argv):
                    raise RuntimeError(problem)
        tool = "update-ca-trust" if rhel else "update-ca-certificates"
        if not _run.target_has(ctx, tool):
            raise RuntimeError(f"{len(trusted)} certificate(s) written to /{folder}, but the target has no "
                               f"{tool}: not added to its trust store")
        if problem := _run.run_in_target(ctx, out, [tool]):
            raise RuntimeError(problem)
    finally:
        out.close()
    ctx.log.info("%d CA certificate(s) trusted%s", len(trusted), ", defaults removed" if remove else "")
    return None
