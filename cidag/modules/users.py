"""Create groups and users in the target root (cloud-init's users_groups).

Capabilities: wants `cloud-config`; provides `default-user` (the default
user's name, or nothing when the config says there is none).
Cloud-config keys: `users`, `groups`, `user` (overrides the default user).

Writes ROOT/etc/passwd, shadow, group, gshadow, home directories (copied from
ROOT/etc/skel, owner set when running as root) and sudo rules in
ROOT/etc/sudoers.d/90-cidag-users (0440, checked with `visudo -cf` when
present). By default (backend `files`) it edits the files itself, once for
all users, under the shadow tools' locks, as useradd would leave them (a user
private group, ids from login.defs, subordinate ids in ROOT/etc/subuid and
subgid where those exist); backend `tools` runs `groupadd/useradd/usermod
--prefix ROOT` instead (root only). An existing user or group is updated, never
added twice.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from .. import paths, userdata
from ..api import Context
from . import _run
from . import _accounts as acc

STR_OR_LIST = {"type": ["string", "array"], "items": {"type": "string"}}
SUDO = {"type": ["string", "array", "boolean", "null"], "items": {"type": "string"},
        "description": "sudoers rule(s) for the user, e.g. 'ALL=(ALL) NOPASSWD:ALL'; false/null: none"}

USER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": acc.NAME_RE},
        "gecos": {"type": "string"},
        "groups": STR_OR_LIST,
        "primary_group": {"type": "string"},
        "no_user_group": {"type": "boolean"},
        "homedir": {"type": "string"},
        "no_create_home": {"type": "boolean"},
        "shell": {"type": "string"},
        "sudo": SUDO,
        "lock_passwd": {"type": "boolean"},
        "passwd": {"type": "string", "description": "a crypt hash ($6$ or $y$)"},
        "hashed_passwd": {"type": "string", "description": "a crypt hash ($6$ or $y$)"},
        "ssh_authorized_keys": STR_OR_LIST,
        "system": {"type": "boolean"},
        "uid": {"type": ["integer", "string"]},
        "create_groups": {"type": "boolean"},
        "expiredate": {"type": "string"},
    },
    "required": ["name"],
}
DEFAULT_USER_SCHEMA = dict(USER_SCHEMA, required=[])

# cloud-init's user settings cidag does not apply: accepted, and reported one line each by
# `check --user-data` and at run time (userdata.unsupported_paths), so user-data written for
# cloud-init still makes its users. A typo is still an error.
_SPELT = "spelt {} in cidag"
UNSUPPORTED_USER_KEYS = {
    "ssh_import_id": "cidag fetches nothing named in user-data",
    "ssh_redirect_user": "", "selinux_user": "", "snapuser": "", "inactive": "", "doas": "",
    "no_log_init": "",
    "plain_text_passwd": "give a hash in passwd, or a password in chpasswd",
    **{k.replace("_", "-"): _SPELT.format(k) for k in (
        "lock_passwd", "no_create_home", "no_user_group", "primary_group", "create_groups",
        "hashed_passwd", "ssh_authorized_keys", "ssh_import_id", "ssh_redirect_user", "selinux_user",
        "no_log_init", "plain_text_passwd")},
}
CC_USER_PROPERTIES = {**USER_SCHEMA["properties"], **{k: {"unsupported": v} for k, v in UNSUPPORTED_USER_KEYS.items()}}

CLOUD_CONFIG = {
    "users": {"type": ["array", "string"],
              "items": dict(USER_SCHEMA, type=["string", "object"], properties=CC_USER_PROPERTIES),
              "description": "'default', names, or user mappings"},
    "groups": {"type": ["array", "object", "string"]},
    "user": dict(DEFAULT_USER_SCHEMA, type=["string", "object"], properties=CC_USER_PROPERTIES),
}

SETTINGS = {
    "type": "object",
    "properties": {
        "default_user": {
            "type": ["object", "null"],
            "properties": DEFAULT_USER_SCHEMA["properties"],
            "default": {"name": "cidag", "gecos": "Default user", "groups": ["adm", "sudo"],
                        "sudo": "ALL=(ALL) NOPASSWD:ALL", "shell": "/bin/bash", "lock_passwd": True},
            "description": "the distro's default user (cloud-init system_info.default_user); null: none",
        },
        "backend": {"enum": ["auto", "tools", "files"], "default": "auto",
                    "description": "auto (files): edit the account files once for all users, as useradd "
                                   "would; tools: groupadd/useradd/usermod --prefix (root only)"},
        "sudoers_file": {"type": "string", "default": "/etc/sudoers.d/90-cidag-users"},
    },
}

FSYNC_EACH_MAX = 20  # homes: fsync each file for at most this many users, one os.sync beyond
HASH_RE = re.compile(r"!?\$(6|y)\$[^:\s]+")  # fullmatch: no newline can reach the shadow file


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def plan(ctx: Context) -> tuple[list[dict], dict[str, list[str]], str | None]:
    """Users to make (default first), groups to make with members, and the default user's name.

    Raises ValueError naming the cloud-config key that is wrong.
    """
    from ..settings_schema import validate
    from ..errors import SettingsError

    # `users` is checked entry by entry below (a bad entry fails that user alone); its
    # settings cidag does not apply are still reported, one line each.
    cc = userdata.cloud_config_sections(ctx, {k: v for k, v in CLOUD_CONFIG.items() if k != "users"})
    if "users" in cc:
        for path, note in userdata.unsupported_paths(CLOUD_CONFIG["users"], cc["users"], ("users",)):
            ctx.log.warning("%s", userdata.unsupported_message(path, note))
    default = dict(ctx.settings.get("default_user") or {})
    try:
        if "user" in cc:
            override = cc["user"]
            override = {"name": override} if isinstance(override, str) else dict(override)
            validate(CLOUD_CONFIG["user"], override, ("user",))
            default.update(_applied(override))
        raw_users = cc.get("users", ["default"])
        if isinstance(raw_users, str):
            raw_users = _as_list(raw_users)
        if not isinstance(raw_users, list):
            raise ValueError("cloud-config 'users' must be a list")
        users: list[dict] = []
        bad: list[str] = []  # entries refused: each that user's failure
        for i, item in enumerate(raw_users):
            if item == "default":
                if default.get("name"):
                    users.insert(0, dict(default, _default=True))
                continue
            if isinstance(item, str):
                item = {"name": item}
            # One bad entry is that user's failure, not everyone's (cloud-init warns per user).
            label = f"users[{i}]" + (f" ({item['name']})" if isinstance(item, dict) and isinstance(item.get("name"), str) else "")
            try:
                if not isinstance(item, dict):
                    raise ValueError("must be a name or a mapping")
                user = _applied(validate(CLOUD_CONFIG["users"]["items"], dict(item), ("users", i)))
                _check_user(user)
            except SettingsError as exc:
                bad.append(f"cloud-config {userdata.format_path(exc.path)}: {exc.message}")
                continue
            except ValueError as exc:
                bad.append(f"cloud-config {label}: {exc}")
                continue
            users.append(user)
        groups = _groups(cc.get("groups"))
    except SettingsError as exc:
        where = userdata.format_path(exc.path)
        raise ValueError(f"cloud-config {where}: {exc.message}") from None
    if users and users[0].get("_default"):
        _check_user(users[0])  # the image's own default user: a mistake there is the module's
    if bad and not users and not groups:
        raise ValueError("; ".join(bad))  # nothing asked for can be made: the module fails
    for message in bad:
        ctx.fault(f"{message}; user not created")
    default_name = users[0]["name"] if users and users[0].get("_default") else None
    return users, groups, default_name


def _applied(user: dict) -> dict:
    """A user mapping without the cloud-init settings cidag reports and ignores."""
    return {k: v for k, v in user.items() if k not in UNSUPPORTED_USER_KEYS}


def _valid_name(name: str) -> bool:
    # fullmatch: a schema pattern's `$` also matches before a trailing newline.
    return bool(re.fullmatch(acc.NAME_CHARS, name)) and len(name) <= 32


def _check_user(u: dict) -> None:
    """Refuse what would corrupt the account files or leave the root (':' ',' newlines, '..')."""
    name = u["name"]
    if not _valid_name(name):
        raise ValueError(f"invalid user name {name!r}")
    for g in _as_list(u.get("groups")) + ([u["primary_group"]] if u.get("primary_group") else []):
        if not _valid_name(g):
            raise ValueError(f"user {name}: invalid group name {g!r}")
    for key in ("homedir", "shell"):
        value = u.get(key)
        if value is not None and (not value.startswith("/") or ".." in value.split("/")
                                  or any(c in value for c in ":\n\0")):
            raise ValueError(f"user {name}: {key} must be an absolute path without '..' or ':'")
    gecos = u.get("gecos")
    if gecos is not None and any(c in gecos for c in ":\n\0"):
        raise ValueError(f"user {name}: gecos must not contain ':' or a newline")
    if u.get("uid") is not None and not str(u["uid"]).isdigit():
        raise ValueError(f"user {name}: uid {u['uid']!r} is not a number")
    value = u.get("hashed_passwd") or u.get("passwd")
    if value and not HASH_RE.fullmatch(value):
        raise ValueError(f"user {name}: passwd must be a SHA-512 ($6$) or yescrypt ($y$) hash (not shown)")


def _groups(value) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if value is None:
        return out
    items = [value] if isinstance(value, (str, dict)) else value
    for item in items:
        if isinstance(item, str):
            for name in _as_list(item):
                out.setdefault(name, [])
        elif isinstance(item, dict):
            for name, members in item.items():
                out.setdefault(str(name), []).extend(_as_list(members))
        else:
            raise ValueError("cloud-config 'groups' entries must be names or {group: [members]}")
    for name, members in out.items():
        if not _valid_name(name):
            raise ValueError(f"invalid group name {name!r}")
        for m in members:
            if not _valid_name(m):
                raise ValueError(f"group {name}: invalid member name {m!r}")
    return out


def run(ctx: Context) -> dict | None:
    _run.drop_capability_env(ctx)
    users, groups, default_name = plan(ctx)
    if not users and not groups:
        ctx.log.info("no users or groups to create")
        return None
    root = Path(ctx.root)
    backend = ctx.settings.get("backend", "auto")
    if backend == "auto":
        # The files, written once for all users, as useradd would leave them (subordinate ids
        # included): useradd rewrites them once per user (3,000 users took 100 s) and costs
        # 0.6-0.9 s a user under emulation, on a first boot's login path.
        backend = "files"
    if backend == "tools" and os.geteuid() != 0:
        raise RuntimeError("backend 'tools' needs root (useradd --prefix)")
    with acc.locked(root):
        db = acc.Database(root)
        acc.bootstrap(db)
        db.save()
    # Groups a user is put in (sudo, adm, docker...) are made as system groups when missing.
    system_groups: list[str] = []
    for u in users:
        wanted = _as_list(u.get("groups")) + ([u["primary_group"]] if u.get("primary_group") else [])
        if u.get("create_groups", True):
            system_groups += [g for g in wanted if g not in groups and g not in system_groups]
    apply = _apply_tools if backend == "tools" else _apply_files
    apply(ctx, root, users, groups, system_groups)
    db = acc.Database(root)
    # The skeleton files of every new home are durable before the module ends ok: a few homes
    # fsync each file (a first boot's login waits for this module, and os.sync would flush the
    # whole machine's dirty pages), many homes one os.sync for all.
    each = len(users) <= FSYNC_EACH_MAX
    homes = sum(_home(ctx, root, db, u, durable=each) for u in users)
    if homes and not each:
        os.sync()
    _sudoers(ctx, root, users)
    names = ", ".join(u["name"] for u in users)
    ctx.log.info("users ready (%s backend): %s", backend, names or "(none)")
    return {"default-user": default_name} if default_name else None


def _shadow_password(u: dict, current: str | None) -> str | None:
    """The new shadow password field, or None to keep `current`."""
    value = u.get("hashed_passwd") or u.get("passwd")
    if value:
        if not HASH_RE.fullmatch(value):
            raise ValueError(f"user {u['name']}: passwd must be a SHA-512 ($6$) or yescrypt ($y$) hash")
        return value if not u.get("lock_passwd", True) else "!" + value.lstrip("!")
    if u.get("lock_passwd", True):
        if current is None or current in ("", "*"):
            return "!"
        return current if current.startswith("!") else "!" + current
    return None if current is not None else "!"


def _apply_files(ctx: Context, root: Path, users: list[dict], groups: dict[str, list[str]],
                 system_groups: list[str]) -> None:
    with acc.locked(root):
        db = acc.Database(root)
        for name in system_groups:
            _ensure_group(db, name, system=True)
        for name in groups:
            _ensure_group(db, name, system=False)
        created = [u["name"] for u in users if _ensure_user(ctx, db, u) and not u.get("system")]
        for name, members in groups.items():
            for m in members:
                if db.find("passwd", m) is None:
                    ctx.log.warning("group %s: member %s does not exist; not added", name, m)
                    continue
                db.add_member(name, m)
        db.save()
    defs = acc.login_defs(root)
    low, high = int(defs.get("UID_MIN", 1000)), int(defs.get("UID_MAX", 60000))
    in_range = [n for n in created if low <= db.user(n).uid <= high]  # as useradd: not for odd uids
    try:
        for line in acc.add_subordinate_ranges(root, in_range):
            ctx.log.info("subordinate ids: %s", line)
    except (ValueError, RuntimeError, OSError, paths.PathRefused) as exc:
        # The users exist; only their ranges are missing: an item that failed, not the module.
        ctx.fault(f"subordinate ids not given to {', '.join(in_range)}: {getattr(exc, 'strerror', None) or exc}")


def _ensure_group(db: acc.Database, name: str, system: bool, gid: int | None = None) -> int:
    existing = db.group_gid(name)
    if existing is not None:
        return existing
    new = db.free_id("group", system, gid)
    db.set("group", [name, "x", str(new), ""])
    db.set("gshadow", [name, "!", "", ""])
    return new


def _ensure_user(ctx: Context, db: acc.Database, u: dict) -> bool:
    """Add or update the user's entries in `db`; True when the user is new."""
    name = u["name"]
    old = db.find("passwd", name)
    system = bool(u.get("system"))
    home = u.get("homedir") or (old[5] if old else f"/home/{name}")
    shell = u.get("shell") or (old[6] if old else "/bin/sh")
    gecos = u.get("gecos") if u.get("gecos") is not None else (old[4] if old else "")
    if ":" in gecos or "\n" in gecos or ":" in home or ":" in shell:
        raise ValueError(f"user {name}: ':' or a newline in gecos, homedir or shell")
    if old:
        uid, gid = int(old[2]), int(old[3])
        if u.get("primary_group"):
            gid = _ensure_group(db, u["primary_group"], system)
        ctx.log.info("user %s exists (uid %d): updated", name, uid)
    else:
        want = int(u["uid"]) if u.get("uid") is not None else None
        uid = db.free_id("passwd", system, want)
        if u.get("primary_group"):
            gid = _ensure_group(db, u["primary_group"], system)
        elif u.get("no_user_group"):
            gid = db.group_gid("users") if db.group_gid("users") is not None else 100
        else:
            # A user private group with the uid as gid when that gid is free, as useradd does.
            free = db.group_gid(name) is None and db.group_name(uid) is None
            gid = _ensure_group(db, name, system, uid if free else None)
        ctx.log.info("user %s created (uid %d)", name, uid)
    db.set("passwd", [name, "x", str(uid), str(gid), gecos, home, shell])
    sh = db.find("shadow", name)
    if sh is None:
        sh = [name, "!", str(acc.today()), "0", "99999", "7", "", "", ""]
        current = None
    else:
        current = sh[1]
    new_pw = _shadow_password(u, current)
    if new_pw is not None:
        sh[1] = new_pw
    if u.get("expiredate"):
        sh[7] = str(_days(u["expiredate"]))
    db.set("shadow", sh)
    for g in _as_list(u.get("groups")):
        db.add_member(g, name)
    return not old


def _days(date: str) -> int:
    import datetime

    try:
        d = datetime.date.fromisoformat(date)
    except ValueError:
        raise ValueError(f"expiredate {date!r} is not YYYY-MM-DD") from None
    return (d - datetime.date(1970, 1, 1)).days


def _tool(ctx: Context, argv: list[str]) -> None:
    # The shadow tools' own root option: the target's files, the host's binaries.
    _run.check_in_target(ctx, argv, root_option="--prefix")


def _apply_tools(ctx: Context, root: Path, users: list[dict], groups: dict[str, list[str]],
                 system_groups: list[str]) -> None:
    db = acc.Database(root)
    for name in system_groups:
        if db.group_gid(name) is None:
            _tool(ctx, ["groupadd", "--system", name])
    for name in groups:
        if db.group_gid(name) is None:
            _tool(ctx, ["groupadd", name])
    for u in users:
        db = acc.Database(root)
        name = u["name"]
        old = db.find("passwd", name)
        argv: list[str]
        if old is None:
            argv = ["useradd", "-M"]
            if u.get("system"):
                argv.append("--system")
            if u.get("uid") is not None:
                argv += ["--uid", str(u["uid"])]
            if u.get("primary_group"):
                argv += ["--gid", u["primary_group"]]
            elif u.get("no_user_group"):
                argv.append("--no-user-group")
            else:
                argv.append("--user-group")
            argv += ["--home-dir", u.get("homedir") or f"/home/{name}", "--shell", u.get("shell") or "/bin/sh"]
            if u.get("gecos"):
                argv += ["--comment", u["gecos"]]
        else:
            argv = ["usermod"]
            if u.get("primary_group"):
                argv += ["--gid", u["primary_group"]]
            if u.get("shell"):
                argv += ["--shell", u["shell"]]
            if u.get("gecos") is not None:
                argv += ["--comment", u["gecos"]]
            if u.get("homedir"):
                argv += ["--home", u["homedir"]]
            ctx.log.info("user %s exists: updated", name)
        if u.get("groups"):
            argv += (["-a"] if old is not None else []) + ["--groups", ",".join(_as_list(u["groups"]))]
        if old is not None and len(argv) == 1:
            pass  # nothing to change in passwd/group
        else:
            _tool(ctx, argv + [name])
        if old is None:
            ctx.log.info("user %s created", name)
    # Passwords, locks and expiry: the shadow file directly (never a hash on a command line).
    with acc.locked(root):
        db = acc.Database(root)
        for u in users:
            sh = db.find("shadow", u["name"])
            if sh is None:
                continue
            new_pw = _shadow_password(u, sh[1])
            if new_pw is not None and new_pw != sh[1]:
                sh[1] = new_pw
                db.set("shadow", sh)
            if u.get("expiredate"):
                sh[7] = str(_days(u["expiredate"]))
                db.set("shadow", sh)
        for name, members in groups.items():
            for m in members:
                if db.find("passwd", m) is not None:
                    db.add_member(name, m)
        db.save()


def _home(ctx: Context, root: Path, db: acc.Database, u: dict, durable: bool = True) -> bool:
    """Make the user's home from the skeleton; True when one was made."""
    if u.get("no_create_home") or (u.get("system") and not u.get("homedir")):
        return False
    user = db.user(u["name"])
    if user is None or not user.home.startswith("/") or user.home == "/":
        return False
    target = paths.confine(root, user.home)
    if target.exists():
        return False
    paths.makedirs(root, os.path.dirname(user.home.rstrip("/")) or "/")  # /home: root's, 0755
    paths.makedirs(root, user.home, mode=_home_mode(root), uid=user.uid, gid=user.gid)
    skel = paths.confine(root, "etc/skel")
    if skel.is_dir():
        _copy_skel(root, skel, user.home, user.uid, user.gid, durable)
    ctx.log.info("home %s created for %s", user.home, user.name)
    return True


def _home_mode(root: Path) -> int:
    value = acc.login_defs(root).get("HOME_MODE")
    try:
        return int(value, 8) if value else 0o700
    except ValueError:
        return 0o700


def _copy_skel(root: Path, skel: Path, home: str, uid: int, gid: int, durable: bool = True) -> None:
    for dirpath, dirnames, filenames in os.walk(skel):
        rel = os.path.relpath(dirpath, skel)
        for d in dirnames:
            src = os.path.join(dirpath, d)
            mode = stat.S_IMODE(os.lstat(src).st_mode)
            paths.makedirs(root, os.path.normpath(os.path.join(home, rel, d)), mode=mode, uid=uid, gid=gid,
                           follow_symlinks=False)
        for f in filenames:
            src = os.path.join(dirpath, f)
            st = os.lstat(src)
            if not stat.S_ISREG(st.st_mode):
                continue  # symlinks and devices in skel are not copied (nothing to follow)
            with open(src, "rb") as fh:
                data = fh.read()
            # durable=False: thousands of users would pay an fsync each; run() syncs once.
            paths.write_file(root, os.path.normpath(os.path.join(home, rel, f)), data,
                             mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid, follow_symlinks=False,
                             durable=durable)


def _sudoers(ctx: Context, root: Path, users: list[dict]) -> None:
    lines = []
    for u in users:
        rules = u.get("sudo")
        if rules in (None, False, True):
            continue
        for rule in _as_list([rules] if isinstance(rules, str) else rules):
            if "\n" in rule:
                raise ValueError(f"user {u['name']}: a sudo rule must be one line")
            lines.append(f"{u['name']} {rule}")
    if not lines:
        return
    text = "# Created by cidag (users module)\n\n" + "\n".join(lines) + "\n"
    rel = ctx.settings.get("sudoers_file", "/etc/sudoers.d/90-cidag-users")
    target = paths.confine(root, rel)
    existing = paths.read_file(root, rel)
    if existing is not None:
        old = existing.decode("utf-8", "replace")
        extra = [line for line in lines if line not in old.splitlines()]
        if not extra:
            return
        text = old.rstrip("\n") + "\n" + "\n".join(extra) + "\n"
    visudo = shutil.which("visudo")
    if visudo:
        # Check a private copy first: a broken sudoers file is never installed.
        tmp = paths.write_file(root, str(Path(rel).parent / ".cidag-sudoers-check"), text, mode=0o440, uid=0, gid=0)
        try:
            res = ctx.run([visudo, "-cf", str(tmp)])
        finally:
            os.unlink(tmp)
        if not res.ok:
            raise RuntimeError(f"sudo rules rejected by visudo: {res.stdout_text().strip().splitlines()[:1]}")
    paths.write_file(root, rel, text, mode=0o440, uid=0, gid=0, dir_mode=0o750)
    _include_dir(root, target.parent)
    ctx.log.info("sudo rules written to %s", rel)


def _include_dir(root: Path, sudoers_d: Path) -> None:
    """Make ROOT/etc/sudoers read sudoers.d, as cloud-init does, when sudo is installed there."""
    data = paths.read_file(root, "etc/sudoers")
    if data is None:
        return
    text = data.decode("utf-8", "replace")
    if re.search(r"^[#@]includedir\s+/etc/sudoers\.d\s*$", text, re.M):
        return
    paths.write_file(root, "etc/sudoers", "\n#includedir /etc/sudoers.d\n", append=True, mode=0o440)
