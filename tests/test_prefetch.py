"""The boot's background imports (prefetch.py): what a first boot and a later boot import early."""
from __future__ import annotations

import conftest  # noqa: F401  (the suite's fixtures and path set-up)
from cidag import prefetch
from cidag.plancache import compile_frozen
from cidag.manifest import find_manifests


def shipped():
    cg, _ = compile_frozen(*find_manifests(None, None, None))
    return cg


def test_a_first_boot_imports_the_login_modules_early():
    names = prefetch.modules_to_import(shipped(), first_boot=True)
    assert "cidag.modules.users" in names and "cidag.modules.ssh_keys" in names
    # user-data is parsed first (priority 0), so its code comes before the later modules'
    assert names.index("cidag.modules.user_data") < names.index("cidag.modules.runcmd")
    assert len(names) == len(set(names))


def test_a_later_boot_imports_only_what_runs_every_boot():
    names = prefetch.modules_to_import(shipped(), first_boot=False)
    assert "cidag.modules.user_data" in names and "cidag.modules.network" in names
    assert "cidag.modules.users" not in names  # per-instance: its marker skips it


def test_plugins_are_imported_only_when_their_node_runs(tmp_path):
    (tmp_path / "s.yaml").write_text("version: 1\nsources:\n  - {name: s, type: static, capabilities: [x], "
                                     "settings: {data: {x: 1}}}\n")
    (tmp_path / "m.yaml").write_text("version: 1\nmodules:\n  - {name: p, type: 'plugins_for_tests:write_text', "
                                     "frequency: per-boot, needs: [x], settings: {text: hi}}\n  - {name: q, type: exec, "
                                     "frequency: per-boot, settings: {command: 'true'}}\n")
    cg, _ = compile_frozen(str(tmp_path / "s.yaml"), str(tmp_path / "m.yaml"))
    assert prefetch.modules_to_import(cg, first_boot=True) == ["cidag.modules.exec"]
