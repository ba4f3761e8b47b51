"""Every top-level cloud-config key: applied by a cidag module, or reported as not supported.

One source of truth for three users: `cidag check --user-data` and the
user-data module at run time (one line per key cidag does not apply), and the
table in docs/modules.md (`python3 -m cidag.cloudconfig_keys --write
docs/modules.md`; a test fails when the doc is out of date).

The keys cidag applies are the `CLOUD_CONFIG` schemas the built-in module
types declare (`section_schemas()`); CLOUD_INIT_KEYS is the list of
top-level keys in cloud-init's own schema, with the cloud-init module that
owns each.
"""
from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

CLOUD_INIT_SCHEMA = "cloudinit/config/schemas/schema-cloud-config-v1.json, cloud-init commit 04eacd0 (2026-08-21)"

# key -> the cloud-init module whose schema declares it (deprecated spellings included).
CLOUD_INIT_KEYS: dict[str, str] = {
    "allow_public_ssh_keys": "cc_ssh",
    "ansible": "cc_ansible",
    "apk_repos": "cc_apk_configure",
    "apt": "cc_apt_configure",
    "apt_pipelining": "cc_apt_pipelining",
    "apt_reboot_if_required": "cc_package_update_upgrade_install",  # deprecated
    "apt_update": "cc_package_update_upgrade_install",  # deprecated
    "apt_upgrade": "cc_package_update_upgrade_install",  # deprecated
    "authkey_hash": "cc_ssh_authkey_fingerprints",
    "autoinstall": "cc_ubuntu_autoinstall",
    "bootcmd": "cc_bootcmd",
    "byobu_by_default": "cc_byobu",
    "ca-certs": "cc_ca_certs",  # deprecated
    "ca_certs": "cc_ca_certs",
    "chef": "cc_chef",
    "chpasswd": "cc_set_passwords",
    "cloud_config_modules": "base_config",
    "cloud_final_modules": "base_config",
    "cloud_init_modules": "base_config",
    "create_hostname_file": "cc_set_hostname",
    "device_aliases": "cc_disk_setup",
    "disable_ec2_metadata": "cc_disable_ec2_metadata",
    "disable_root": "cc_ssh",
    "disable_root_opts": "cc_ssh",
    "disk_setup": "cc_disk_setup",
    "drivers": "cc_ubuntu_drivers",
    "fan": "cc_fan",
    "final_message": "cc_final_message",
    "fqdn": "cc_set_hostname",
    "fs_setup": "cc_disk_setup",
    "groups": "cc_users_groups",
    "growpart": "cc_growpart",
    "grub-dpkg": "cc_grub_dpkg",  # deprecated
    "grub_dpkg": "cc_grub_dpkg",
    "hostname": "cc_set_hostname",
    "keyboard": "cc_keyboard",
    "landscape": "cc_landscape",
    "launch-index": "base_config",
    "locale": "cc_locale",
    "locale_configfile": "cc_locale",
    "lxd": "cc_lxd",
    "manage_etc_hosts": "cc_update_etc_hosts",
    "manage_resolv_conf": "cc_resolv_conf",
    "mcollective": "cc_mcollective",
    "merge_how": "base_config",
    "merge_type": "base_config",
    "migrate": "(top level)",
    "mount_default_fields": "cc_mounts",
    "mounts": "cc_mounts",
    "no_ssh_fingerprints": "cc_ssh_authkey_fingerprints",
    "ntp": "cc_ntp",
    "output": "output_config",
    "package_reboot_if_required": "cc_package_update_upgrade_install",
    "package_update": "cc_package_update_upgrade_install",
    "package_upgrade": "cc_package_update_upgrade_install",
    "packages": "cc_package_update_upgrade_install",
    "password": "cc_set_passwords",
    "phone_home": "cc_phone_home",
    "power_state": "cc_power_state_change",
    "prefer_fqdn_over_hostname": "cc_set_hostname",
    "preserve_hostname": "cc_set_hostname",
    "puppet": "cc_puppet",
    "random_seed": "cc_seed_random",
    "reporting": "reporting_config",
    "resize_rootfs": "cc_resizefs",
    "resolv_conf": "cc_resolv_conf",
    "rh_subscription": "cc_rh_subscription",
    "rpi": "cc_raspberry_pi",
    "rsyslog": "cc_rsyslog",
    "runcmd": "cc_runcmd",
    "salt_minion": "cc_salt_minion",
    "snap": "cc_snap",
    "spacewalk": "cc_spacewalk",
    "ssh": "cc_keys_to_console",
    "ssh_authorized_keys": "cc_ssh",
    "ssh_deletekeys": "cc_ssh",
    "ssh_fp_console_blacklist": "cc_keys_to_console",
    "ssh_genkeytypes": "cc_ssh",
    "ssh_import_id": "cc_ssh_import_id",
    "ssh_key_console_blacklist": "cc_keys_to_console",
    "ssh_keys": "cc_ssh",
    "ssh_publish_hostkeys": "cc_ssh",
    "ssh_pwauth": "cc_set_passwords",
    "ssh_quiet_keygen": "cc_ssh",
    "swap": "cc_mounts",
    "system_info": "base_config",  # deprecated
    "timezone": "cc_timezone",
    "ubuntu_advantage": "cc_ubuntu_pro",  # deprecated
    "ubuntu_pro": "cc_ubuntu_pro",
    "updates": "cc_install_hotplug",
    "user": "cc_users_groups",
    "users": "cc_users_groups",
    "vendor_data": "cc_scripts_vendor",
    "version": "(top level)",
    "wireguard": "cc_wireguard",
    "write_files": "cc_write_files",
    "yum_repo_dir": "cc_yum_add_repo",
    "yum_repos": "cc_yum_add_repo",
    "zypper": "cc_zypper_add_repo",
}

# Why a key is not applied, or what to use instead; shown in the doc's table.
NOTES: dict[str, str] = {
    "apt": "write sources with `write_files` (/etc/apt/sources.list.d), then `packages`",
    "yum_repos": "write repo files with `write_files` (/etc/yum.repos.d), then `packages`",
    "zypper": "write repo files with `write_files`, then `packages`",
    "apk_repos": "write /etc/apk/repositories with `write_files`",
    "apt_reboot_if_required": "use `power_state`",
    "package_reboot_if_required": "use `power_state`",
    "merge_how": "parts merge one way: mappings recursively, the later part wins",
    "merge_type": "parts merge one way: mappings recursively, the later part wins",
    "cloud_init_modules": "the modules and their order are modules.yaml",
    "cloud_config_modules": "the modules and their order are modules.yaml",
    "cloud_final_modules": "the modules and their order are modules.yaml",
    "system_info": "distro defaults are module settings in modules.yaml",
    "output": "output goes to the journal and the run record",
    "reporting": "the run record (`cidag status`, `cidag analyze`)",
    "ssh_import_id": "cidag fetches nothing named in user-data",
    "snap": "not supported; `packages` installs with apt or dnf",
    "disk_setup": "partition with `bootcmd`",
    "fs_setup": "make file systems with `bootcmd`",
    "device_aliases": "name devices in `mounts` directly",
    "ssh_keys": "host keys are generated on the target (`ssh_genkeytypes`)",
    "random_seed": "the kernel's entropy is enough at boot",
    "launch-index": "one user-data per instance",
    "packages": "distro packages (`name` or `[name, version]`, `apt:` lists); `snap:` lists are refused",
    "mounts": "fstab entries; cloud-init's `ephemeral0`/`swap` device names are not resolved",
    "ntp": "chrony or systemd-timesyncd configuration; no package installed, `config.template` ignored",
    "power_state": "only when the root is /",
    "resize_rootfs": "ext2/3/4, xfs, btrfs; skipped when the root is not a file system of its own",
    "growpart": "with `growpart` (cloud-utils); skipped when there is nothing to grow",
}

def section_schemas() -> dict[str, tuple[str, dict]]:
    """Top-level cloud-config key -> (module type, JSON Schema), from every built-in module."""
    import importlib

    from .modules import BUILTIN_MODULES

    out: dict[str, tuple[str, dict]] = {}
    for type_name, modname in BUILTIN_MODULES.items():
        try:
            mod = importlib.import_module(modname)
        except Exception:  # a broken module is cidag check's business elsewhere
            continue
        for key, schema in (getattr(mod, "CLOUD_CONFIG", None) or {}).items():
            out.setdefault(key, (type_name, schema))
    return out


# Top-level key -> the built-in module type that applies it: what section_schemas() finds,
# written out so that a boot's user-data module need not import every module to warn about
# unsupported keys (tests/test_cloudconfig_keys.py checks that it is current).
APPLIED = {
    'apt_update': 'packages',
    'apt_upgrade': 'packages',
    'bootcmd': 'bootcmd',
    'ca-certs': 'ca-certs',
    'ca_certs': 'ca-certs',
    'chpasswd': 'set-password',
    'create_hostname_file': 'hostname',
    'disable_root': 'ssh-keys',
    'disable_root_opts': 'ssh-keys',
    'final_message': 'final-message',
    'fqdn': 'hostname',
    'groups': 'users',
    'growpart': 'growpart',
    'hostname': 'hostname',
    'locale': 'locale',
    'locale_configfile': 'locale',
    'manage_etc_hosts': 'hostname',
    'mount_default_fields': 'mounts',
    'mounts': 'mounts',
    'ntp': 'ntp',
    'package_update': 'packages',
    'package_upgrade': 'packages',
    'packages': 'packages',
    'password': 'set-password',
    'phone_home': 'phone-home',
    'power_state': 'power-state',
    'prefer_fqdn_over_hostname': 'hostname',
    'preserve_hostname': 'hostname',
    'resize_rootfs': 'resizefs',
    'runcmd': 'runcmd',
    'ssh': 'ssh-host-keys',
    'ssh_authorized_keys': 'ssh-keys',
    'ssh_deletekeys': 'ssh-host-keys',
    'ssh_fp_console_blacklist': 'ssh-host-keys',
    'ssh_genkeytypes': 'ssh-host-keys',
    'ssh_key_console_blacklist': 'ssh-host-keys',
    'ssh_pwauth': 'set-password',
    'swap': 'mounts',
    'timezone': 'timezone',
    'user': 'users',
    'users': 'users',
    'vendor_data': 'user-data',
    'write_files': 'write-files',
}


_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def applied() -> dict[str, str]:
    """Top-level key -> the built-in cidag module type that applies it (APPLIED)."""
    return APPLIED


def unsupported(config: dict) -> list[str]:
    """The top-level keys of `config` that no built-in cidag module applies, in document order."""
    have = applied()
    return [str(k) for k in config if str(k) not in have]


def message(key: str) -> str:
    """One line saying `key` is not supported (with a hint when it looks like a misspelt key)."""
    text = f"cloud-config key {key!r} is not supported by cidag: ignored"
    if key in CLOUD_INIT_KEYS:
        note = NOTES.get(key)
        return f"{text} ({note})" if note and key not in applied() else text
    hint = difflib.get_close_matches(key, list(set(CLOUD_INIT_KEYS) | set(applied())), n=1)
    if hint:
        return f"{text} (not a cloud-init key either; did you mean {hint[0]!r}?)"
    return f"{text} (not a cloud-init key either)"


def table() -> str:
    """The markdown table of every key: cloud-init's and cidag's, with cidag's status."""
    have = applied()
    rows = ["| key | cloud-init module | in cidag | note |", "| --- | --- | --- | --- |"]
    for key in sorted(set(CLOUD_INIT_KEYS) | set(have)):
        status = f"applied by `{have[key]}`" if key in have else "**not supported** (reported)"
        origin = CLOUD_INIT_KEYS.get(key, "– (cidag only)")
        rows.append(f"| `{key}` | {origin} | {status} | {NOTES.get(key, '')} |")
    return "\n".join(rows) + "\n"


BEGIN = "<!-- cloud-config keys: generated by python3 -m cidag.cloudconfig_keys --write docs/modules.md -->\n"
END = "<!-- end of generated cloud-config keys -->\n"


def render_doc(text: str) -> str:
    """`text` with the part between BEGIN and END replaced by the current table."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table() + "\n" + text[end:]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in ("--write", "--check"):
        path = Path(argv[1])
        old = path.read_text()
        new = render_doc(old)
        if argv[0] == "--check":
            if new != old:
                print(f"{path}: the cloud-config key table is out of date; "
                      f"run python3 -m cidag.cloudconfig_keys --write {path}", file=sys.stderr)
                return 1
            return 0
        if new != old:
            path.write_text(new)
        return 0
    if argv:
        print("usage: python3 -m cidag.cloudconfig_keys [--write|--check docs/modules.md]", file=sys.stderr)
        return 2
    sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
