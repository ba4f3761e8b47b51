"""Set the target's system locale (cloud-init's cc_locale).

Capabilities: wants `cloud-config`. Cloud-config keys: `locale` (e.g.
`en_US.UTF-8`; `false` does nothing) and `locale_configfile`; the `locale`
setting is used when cloud-config has none. Unlike cloud-init, no key means
no change (cidag does not impose a distro default).

The file gets `LANG=LOCALE` (other lines kept): `locale_configfile`, else
ROOT/etc/default/locale on Debian-family targets (ROOT/etc/debian_version),
else ROOT/etc/locale.conf. On Debian-family targets the locale is then
enabled in ROOT/etc/locale.gen (the line from /usr/share/i18n/SUPPORTED,
uncommented or added, others kept) and compiled with `locale-gen
--keep-existing` inside the target, as cloud-init does; `C`, `C.UTF-8` and
`POSIX` need no compiling. A target without locale-gen gets the files and a
warning.
"""
from __future__ import annotations

import re

from .. import paths, userdata
from ..api import Context
from . import _run

CLOUD_CONFIG = {
    "locale": {"type": ["string", "boolean"]},
    "locale_configfile": {"type": "string"},
}
SETTINGS = {
    "type": "object",
    "properties": {"locale": {"type": ["string", "null"], "default": None,
                              "description": "used when cloud-config has no locale"}},
}
NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9-]+)?(?:@[A-Za-z0-9_-]+)?")
BUILT_IN = {"c", "c.utf-8", "c.utf8", "posix"}


def locale_gen_line(supported: str, locale: str) -> str:
    """The /etc/locale.gen line for `locale`: its line in SUPPORTED (UTF-8 preferred when no
    charset is given), else `LOCALE CHARSET` (UTF-8 when the name has none)."""
    lines = [ln.strip() for ln in supported.splitlines() if ln.strip() and not ln.startswith("#")]
    exact = [ln for ln in lines if ln.split()[0] == locale]
    if exact:
        return exact[0]
    if "." not in locale:
        base, _, mod = locale.partition("@")
        near = [ln for ln in lines if re.fullmatch(rf"{re.escape(base)}\.[^\s@]+" + (rf"@{re.escape(mod)}" if mod else ""),
                                                    ln.split()[0])]
        utf8 = [ln for ln in near if ln.upper().endswith(" UTF-8")]
        if utf8 or near:
            return (utf8 or near)[0]
        return f"{base}.UTF-8{'@' + mod if mod else ''} UTF-8"
    charset = locale.split(".", 1)[1].split("@")[0]
    return f"{locale} {charset}"


def _set_lang(old: str, locale: str) -> str:
    lines = [ln for ln in old.splitlines() if not re.match(r"\s*LANG=", ln)]
    return "\n".join([f"LANG={locale}"] + lines) + "\n"


def _enable(old: str, line: str) -> str:
    """`old` (a locale.gen) with `line` uncommented, or added; every other line kept."""
    out, found = [], False
    for raw in old.splitlines():
        if raw.strip().lstrip("#").strip().split() == line.split():
            out.append(line)
            found = True
        else:
            out.append(raw)
    if not found:
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    locale = cc.get("locale", ctx.settings.get("locale"))
    if locale is False or not locale:
        ctx.log.info("no locale asked")
        return None
    if locale is True or not NAME.fullmatch(str(locale)):
        raise ValueError(f"invalid locale {locale!r}")
    debian = paths.confine(ctx.root, "etc/debian_version").exists()
    conf = cc.get("locale_configfile") or ("etc/default/locale" if debian else "etc/locale.conf")
    old = (paths.read_file(ctx.root, conf) or b"").decode("utf-8", "replace")
    paths.write_file(ctx.root, conf, _set_lang(old, locale), mode=0o644)
    ctx.log.info("LANG=%s in %s", locale, conf)
    if locale.lower() in BUILT_IN or not (debian or paths.confine(ctx.root, "etc/locale.gen").exists()):
        return None
    supported = (paths.read_file(ctx.root, "usr/share/i18n/SUPPORTED") or b"").decode("utf-8", "replace")
    line = locale_gen_line(supported, locale)
    old_gen = (paths.read_file(ctx.root, "etc/locale.gen") or b"").decode("utf-8", "replace")
    paths.write_file(ctx.root, "etc/locale.gen", _enable(old_gen, line), mode=0o644)
    if not _run.target_has(ctx, "locale-gen"):
        ctx.log.warning("locale-gen is not in the target: %s enabled in /etc/locale.gen but not compiled", locale)
        return None
    _run.check_in_target(ctx, ["locale-gen", "--keep-existing"])
    ctx.log.info("%s compiled (locale-gen)", line.split()[0])
    return None
