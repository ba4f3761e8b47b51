"""Generate the SSH server's host keys for this instance, as cloud-init's cc_ssh does.

Capabilities: wants `cloud-config`. Cloud-config keys: `ssh_genkeytypes`
(default: the `types` setting, rsa, ecdsa and ed25519), `ssh_deletekeys`
(default true: keys left by the image or by another instance are removed
first, so no two instances share a host key), and cloud-init's
cc_keys_to_console keys `ssh.emit_keys_to_console`,
`ssh_fp_console_blacklist`, `ssh_key_console_blacklist`.

The `part` setting splits the work in two nodes, so that a login waits only
for the one key it needs (an RSA key takes 12-15 s under emulation):

- `login`: removes old keys (`ssh_deletekeys`), then makes only the first
  configured type in the order ed25519, ecdsa, rsa (ed25519 is left out when
  the kernel is in FIPS mode, as the distributions' sshd-keygen does).
- `rest`: makes every configured type still missing (never removes one: a
  run killed between the two nodes leaves the login node's marker, and the
  next boot must keep its key and complete the set), makes a running sshd
  load them, then prints the fingerprints and public keys on the console.
- `all` (the default): both in one node.

Keys go to ROOT/etc/ssh/ssh_host_TYPE_key (0600) and .pub (0644), made by
`ssh-keygen` in a temporary directory and renamed into place (public key
first), one process per type at once. A type whose private key is there is
kept. Per instance: a reboot keeps the keys, a new instance gets new ones.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from .. import paths, userdata
from ..api import Context
from . import _run

KEY_TYPES = ["rsa", "ecdsa", "ed25519"]
LOGIN_PREFERENCE = ["ed25519", "ecdsa", "rsa"]  # the first one configured and allowed serves a login
FIPS_FORBIDS = {"ed25519"}
TMP_PREFIX = ".cidag-keys-"  # a directory (0700) for keys being made: sshd never reads half a key

KEYGEN_CC = {
    # Any string: an unknown type (dsa, from older cloud-init defaults) is reported and skipped, not fatal.
    "ssh_genkeytypes": {"type": "array", "items": {"type": "string"}},
    "ssh_deletekeys": {"type": "boolean"},
}
CONSOLE_CC = {
    "ssh": {"type": "object", "properties": {"emit_keys_to_console": {"type": "boolean"}}},
    "ssh_fp_console_blacklist": {"type": "array", "items": {"type": "string"}},
    "ssh_key_console_blacklist": {"type": "array", "items": {"type": "string"}},
}
CLOUD_CONFIG = {**KEYGEN_CC, **CONSOLE_CC}
SETTINGS = {
    "type": "object",
    "properties": {
        "part": {"enum": ["all", "login", "rest"], "default": "all",
                 "description": "login: old keys removed, the first type a login needs; rest: the other "
                                "types, sshd reloaded, keys printed; all: both"},
        "types": {"type": "array", "items": {"enum": KEY_TYPES}, "default": KEY_TYPES,
                  "description": "key types to generate (cloud-config ssh_genkeytypes wins)"},
        "delete": {"type": "boolean", "default": True,
                   "description": "remove existing host keys first (cloud-config ssh_deletekeys wins)"},
        "fips_flag": {"type": "string", "default": "/proc/sys/crypto/fips_enabled",
                      "description": "file holding 1 when the kernel is in FIPS mode (no ed25519 key then)"},
    },
}
CONSOLE = "/dev/console"
SYSTEMD_RUNNING = "/run/systemd/system"  # exists when systemd booted this machine (sd_booted)
RULE = "#" * 61  # cloud-init's frame around the fingerprints


def fips_enabled(flag: str) -> bool:
    """True when the file `flag` (normally /proc/sys/crypto/fips_enabled) holds 1."""
    try:
        return Path(flag).read_text().strip() == "1"
    except OSError:
        return False


def usable_types(ctx: Context, configured: list[str], *, report: bool) -> list[str]:
    """The configured types cidag can make here, in configured order; with `report`, one log
    line for unknown types and one when FIPS mode rules ed25519 out."""
    unknown = [t for t in configured if t not in KEY_TYPES]
    fips = fips_enabled(ctx.settings.get("fips_flag", "/proc/sys/crypto/fips_enabled"))
    barred = [t for t in configured if fips and t in FIPS_FORBIDS]
    if report and unknown:
        ctx.log.warning("ssh_genkeytypes: unknown key type(s) %s ignored (cidag makes %s)",
                        ", ".join(map(repr, unknown)), ", ".join(KEY_TYPES))
    if report and barred:
        ctx.log.info("FIPS mode: no %s host key (not allowed)", ", ".join(barred))  # expected, not a fault
    return [t for t in configured if t in KEY_TYPES and t not in barred]


def login_type(types: list[str]) -> str | None:
    """The type the login node makes: the first of ed25519, ecdsa, rsa among `types`."""
    return next((t for t in LOGIN_PREFERENCE if t in types), None)


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, KEYGEN_CC)
    part = ctx.settings.get("part", "all")
    configured = list(dict.fromkeys(str(t) for t in cc.get("ssh_genkeytypes", ctx.settings.get("types", KEY_TYPES))))
    delete = bool(cc.get("ssh_deletekeys", ctx.settings.get("delete", True)))
    types = usable_types(ctx, configured, report=part != "rest")
    if part == "login":
        first = login_type(types)
        if first is None:
            ctx.log.warning("no host key type that allows a login is configured (%s): none made",
                            ", ".join(configured) or "empty list")
        generate(ctx, [first] if first else [], delete)
        return None
    # rest never deletes: the login node (or, in a run killed between the two, its marker) stands for it.
    generate(ctx, types, delete and part == "all", background=part == "rest")
    reload_sshd(ctx)
    # The console keys are checked only now: a bad section must not cost the keys.
    print_keys(ctx, userdata.cloud_config_sections(ctx, CONSOLE_CC))
    return None


def generate(ctx: Context, types: list[str], delete: bool, *, background: bool = False) -> list[str]:
    """Make the host keys of `types` under ROOT/etc/ssh that are missing; return the types made.

    `background` runs ssh-keygen under `nice`: off the login's path, it should not take the CPU
    from the nodes a login waits for (a small guest has one or two).
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise RuntimeError("ssh-keygen not found: no host keys (sshd will not start)")
    _run.drop_capability_env(ctx)  # ssh-keygen needs no capability (cloud-config may hold passwords)
    sshd = paths.makedirs(ctx.root, "etc/ssh")
    for stale in sshd.glob(TMP_PREFIX + "*"):  # left by a run killed mid-keygen
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    if delete:
        removed = []
        for f in sshd.glob("ssh_host_*key*"):
            if f.is_file() and not f.is_symlink():
                f.unlink()
                removed.append(f.name)
        if removed:
            ctx.log.info("old host keys removed (ssh_deletekeys): %s", ", ".join(sorted(removed)))
    todo = []
    for t in types:
        key = paths.confine(ctx.root, f"etc/ssh/ssh_host_{t}_key")
        if not (key.exists() or key.is_symlink()):
            todo.append((t, key))
    if not todo:
        ctx.log.info("host keys generated: none needed")
        return []
    ctx.log.info("making host keys: %s", ", ".join(t for t, _ in todo))
    errors: list[str] = []
    nice = ["nice", "-n", "10"] if background and shutil.which("nice") else []
    # A fresh directory per call: a stray ssh-keygen of a killed run cannot write where this one does.
    work = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=sshd))

    def make(t: str, key: Path) -> None:
        tmp = work / key.name
        tmp_pub = work / (key.name + ".pub")
        comment = f"root@{ctx.instance_id or 'cidag'}"
        res = ctx.run([*nice, keygen, "-q", "-t", t, "-N", "", "-C", comment, "-f", str(tmp)])
        if not res.ok:
            errors.append(f"ssh-keygen -t {t} failed: {res.stderr_text().strip()[:200]}")
            return
        os.chmod(tmp, 0o600)
        os.chmod(tmp_pub, 0o644)
        # Public key first: a private key in place always has its .pub.
        os.replace(tmp_pub, key.with_name(key.name + ".pub"))
        os.replace(tmp, key)

    threads = [threading.Thread(target=make, args=item, daemon=True) for item in todo]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        raise RuntimeError("; ".join(errors))
    made = [t for t, _ in todo]
    ctx.log.info("host keys generated: %s", ", ".join(made) or "none needed")
    return made


def reload_sshd(ctx: Context) -> None:
    """On a real boot, make a running sshd load the keys now there; never start or wait for it.

    `try-reload-or-restart` does nothing when sshd is not running (it will read every key when
    it starts); `--no-block` only queues the job: sshd is ordered after a cidag unit, so waiting
    for it could deadlock. A failure is logged, not fatal: the keys are in place.
    """
    systemctl = shutil.which("systemctl")
    if not (_run.is_host_root(ctx) and os.geteuid() == 0 and os.path.isdir(SYSTEMD_RUNNING) and systemctl):
        ctx.log.debug("not a systemd boot of /: no sshd reload")
        return
    argv = [systemctl, "try-reload-or-restart", "--no-block", "ssh.service", "sshd.service"]
    try:
        res = ctx.run(argv)
    except OSError as exc:
        ctx.log.info("sshd not reloaded: %s", exc)
        return
    if res.ok:
        ctx.log.info("sshd asked to reload its host keys (if it runs)")
    else:  # one of the two names is usually not a unit here
        lines = res.stderr_text().strip().splitlines()
        ctx.log.info("systemctl try-reload-or-restart exit %s: %s", res.returncode, lines[0] if lines else "")


def key_blocks(ctx: Context, fp_skip: list[str], key_skip: list[str]) -> list[str]:
    """cloud-init's write-ssh-key-fingerprints: `ssh-keygen -l` of each ROOT/etc/ssh/ssh_host_*key.pub
    between BEGIN/END SSH HOST KEY FINGERPRINTS, then the public keys between BEGIN/END SSH HOST
    KEY KEYS; a key whose type (first word: ssh-ed25519, ssh-rsa...) is in a skip list is left out."""
    keygen = shutil.which("ssh-keygen") or "ssh-keygen"
    pubs = []
    for f in sorted(paths.confine(ctx.root, "etc/ssh").glob("ssh_host_*key.pub")):
        if not f.is_file():
            continue
        text = f.read_text(errors="replace").strip()
        pubs.append((f, text.split()[0] if text else "", text))
    fps = []
    for f, ktype, _ in pubs:
        if ktype in fp_skip:
            continue
        res = ctx.run([keygen, "-l", "-f", str(f)])
        fps.append(res.stdout_text().strip() if res.ok else f"{f.name}: {res.stderr_text().strip()[:200]}")
    lines = [RULE, "-----BEGIN SSH HOST KEY FINGERPRINTS-----", *fps,
             "-----END SSH HOST KEY FINGERPRINTS-----", RULE] if fps else []
    keys = [text for _, ktype, text in pubs if ktype not in key_skip and text]
    if keys:
        lines += ["-----BEGIN SSH HOST KEY KEYS-----", *keys, "-----END SSH HOST KEY KEYS-----"]
    return lines


def console_path(ctx: Context) -> str | None:
    """/dev/console when the target is this machine's / and it is writable; else None (log only)."""
    if _run.is_host_root(ctx) and os.access(CONSOLE, os.W_OK):
        return CONSOLE
    return None


def write_console(path: str, lines: list[str]) -> None:
    """Append `lines` to the console device `path` (never becoming its controlling terminal)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
    try:
        data = "".join(line + "\n" for line in lines).encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def print_keys(ctx: Context, cc: dict) -> None:
    """Print the host keys' fingerprints and public keys as cloud-init's cc_keys_to_console does:
    on the console (see console_path) and always in the node's log (the run record)."""
    if (cc.get("ssh") or {}).get("emit_keys_to_console", True) is False:
        ctx.log.info("host keys not printed: ssh.emit_keys_to_console is false")
        return
    lines = key_blocks(ctx, list(cc.get("ssh_fp_console_blacklist", [])),
                       list(cc.get("ssh_key_console_blacklist", ["ssh-dss"])))
    if not lines:
        ctx.log.info("no host keys to print")
        return
    for line in lines:
        ctx.log.info("%s", line)
    console = console_path(ctx)
    if console is None:
        return
    try:
        write_console(console, lines)
    except OSError as exc:  # a console that went away is no reason to fail the keys
        ctx.log.warning("host keys not printed on %s: %s", console, exc.strerror or exc)
