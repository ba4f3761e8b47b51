"""Tell a URL the instance is up, with its host keys (cloud-init's cc_phone_home).

Capabilities: wants `cloud-config`, `hostname` (and, in the shipped
manifest, `network-online`). Cloud-config key: `phone_home` with `url`
(`$INSTANCE_ID` is replaced), `post` (`all`, the default, or a list of
`pub_key_rsa`, `pub_key_ecdsa`, `pub_key_ed25519`, `instance_id`,
`hostname`, `fqdn`), `tries` (default 10).

One form-encoded POST (application/x-www-form-urlencoded, the fields named
as above); host keys are read from ROOT/etc/ssh/ssh_host_*_key.pub, the host
name from cloud-config `fqdn`/`hostname`, the `hostname` capability, then
ROOT/etc/hostname. Tries are 3 s apart and stop at the node's deadline. A
POST that never succeeds fails the module (cloud-init only logs it).
"""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from .. import paths, userdata
from ..api import Context

FIELDS = ["pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519", "instance_id", "hostname", "fqdn"]
CLOUD_CONFIG = {
    "phone_home": {"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string"},
        "post": {"type": ["string", "array"], "items": {"enum": FIELDS}},
        "tries": {"type": "integer", "minimum": 1},
    }},
}
SETTINGS = {"type": "object", "properties": {}}
PAUSE = 3.0  # seconds between tries, as cloud-init


def collect(ctx: Context, cc: dict, fields: list[str]) -> dict[str, str]:
    """The values to post; a field with no value is posted as 'N/A', as cloud-init does."""
    name = str(cc.get("fqdn") or cc.get("hostname") or ctx.caps.get("hostname") or "").strip()
    if not name:
        name = (paths.read_file(ctx.root, "etc/hostname") or b"").decode("utf-8", "replace").strip()
    short = str(cc.get("hostname") or name).split(".")[0]
    values = {"instance_id": ctx.instance_id or "", "hostname": short, "fqdn": name}
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = paths.read_file(ctx.root, f"etc/ssh/ssh_host_{kind}_key.pub")
        values[f"pub_key_{kind}"] = key.decode("utf-8", "replace").strip() if key else ""
    return {f: values[f] or "N/A" for f in fields}


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    cfg = cc.get("phone_home")
    if not cfg:
        ctx.log.info("no phone_home")
        return None
    post = cfg.get("post", "all")
    if isinstance(post, str) and post != "all":
        raise ValueError(f"phone_home.post: {post!r} is not 'all' or a list of fields")
    fields = FIELDS if post == "all" else list(post)
    url = str(cfg["url"]).replace("$INSTANCE_ID", ctx.instance_id or "").replace(
        "${INSTANCE_ID}", ctx.instance_id or "")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"phone_home.url {url!r} is not an http(s) URL")
    body = urllib.parse.urlencode(collect(ctx, cc, fields)).encode()
    tries = int(cfg.get("tries", 10))
    last = ""
    for attempt in range(1, tries + 1):
        if ctx.cancelled.is_set():
            raise RuntimeError("phone_home: interrupted")
        try:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(req, timeout=max(0.5, min(10.0, ctx.remaining()))) as resp:
                ctx.log.info("phone_home: posted %d field(s) to %s (HTTP %d, try %d)",
                             len(fields), url, resp.status, attempt)
                return None
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        ctx.log.warning("phone_home: try %d of %d to %s: %s", attempt, tries, url, last)
        if attempt < tries:
            if ctx.remaining() <= PAUSE:
                break
            ctx.cancelled.wait(PAUSE)
    raise RuntimeError(f"phone_home: POST to {url} failed after {attempt} tr{'y' if attempt == 1 else 'ies'}: {last}")
