"""`make deb`: the package's fields, files and scripts, unpacked and recorded by dpkg, and the
cidag it installs run from the unpacked tree. (The VM boot tests install it in the guest
image with the guest's dpkg: tests/vm/guest_image.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conftest  # noqa: F401
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import build_deb  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed (dpkg)")

SITE = "usr/lib/python3/dist-packages"


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["make", "-s", "deb", f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    built = REPO / "dist" / f"cidag_{build_deb.version()}_all.deb"
    assert r.stdout.strip().endswith(str(built.relative_to(REPO)))
    shutil.copy(built, out / built.name)
    return out / built.name


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_control_fields(deb):
    assert field(deb, "Package") == "cidag"
    assert field(deb, "Architecture") == "all"
    depends = [d.split()[0] for d in field(deb, "Depends").split(", ")]
    assert depends == ["python3", "python3-networkx", "python3-yaml", "python3-click"]
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], check=True, capture_output=True, text=True).stdout
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert script in info


def test_contents(deb):
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], check=True, capture_output=True, text=True).stdout
    rows = {line.split()[-1].removeprefix("./"): line.split() for line in listing.splitlines()}
    for path in ("usr/bin/cidag", "usr/lib/systemd/system-generators/cidag-generator"):
        assert rows[path][0] == "-rwxr-xr-x" and rows[path][1] == "root/root"
    for unit in ("cidag.service", "cidag-done.service", "cidag.target", "cidag-login.target"):
        assert rows[f"usr/lib/systemd/system/{unit}"][0] == "-rw-r--r--"
    assert f"{SITE}/cidag/cli.py" in rows and f"{SITE}/cidag/defaults/sources.yaml" in rows
    assert not [p for p in rows if "__pycache__" in p or p.endswith(".pyc")]
    assert "etc/cidag/sources.yaml" in rows and "etc/cidag/modules.yaml" in rows
    assert "usr/share/doc/cidag/copyright" in rows


def test_same_checkout_same_bytes(deb, tmp_path):
    again = build_deb.build(tmp_path)
    assert again.read_bytes() == deb.read_bytes()


def test_postinst_enables_the_units_with_an_install_section(tmp_path, deb):
    subprocess.run(["dpkg-deb", "--control", str(deb), str(tmp_path / "c")], check=True)
    postinst = (tmp_path / "c/postinst").read_text()
    units = postinst.split('UNITS="', 1)[1].split('"', 1)[0].split()
    assert units == ["cidag-done.service", "cidag.service", "cidag.target"]
    r = subprocess.run(["sh", "-n", str(tmp_path / "c/postinst")])
    assert r.returncode == 0
    assert (tmp_path / "c/conffiles").read_text().split() == ["/etc/cidag/sources.yaml", "/etc/cidag/modules.yaml"]


def test_dpkg_unpacks_it_into_a_root_and_records_the_conffiles(tmp_path, deb):
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/updates").mkdir()
    (root / "var/lib/dpkg/status").write_text("")
    # --unpack runs no maintainer script (they would run chrooted in a root without a shell);
    # the dependencies are not in this empty root.
    r = subprocess.run(["dpkg", f"--root={root}", "--force-depends", "--force-not-root", "--unpack", str(deb)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    status = subprocess.run(["dpkg", f"--root={root}", "-s", "cidag"], capture_output=True, text=True).stdout
    assert "Status: install ok unpacked" in status
    assert " /etc/cidag/sources.yaml " in status and " /etc/cidag/modules.yaml " in status
    assert os.access(root / "usr/lib/systemd/system-generators/cidag-generator", os.X_OK)


def test_the_installed_cidag_runs(tmp_path, deb):
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    env = {**os.environ, "PYTHONPATH": str(tree / SITE)}
    env.pop("CIDAG_CONFIG_DIR", None)

    def installed(*args: str) -> subprocess.CompletedProcess:
        # The installed script with this interpreter (it has the dependencies), the package from the tree.
        return subprocess.run([sys.executable, str(tree / "usr/bin/cidag"), *args], capture_output=True,
                              text=True, env=env, timeout=60, cwd=tmp_path)

    where = subprocess.run([sys.executable, "-c", "import cidag; print(cidag.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True).stdout.strip()
    assert where == str(tree / SITE / "cidag/__init__.py")
    r = installed("check", "--config-dir", str(tree / "etc/cidag"))
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "s.yaml").write_text(
        "version: 1\nsources:\n  - name: s\n    type: static\n    capabilities: [instance-id]\n"
        "    settings: {data: {instance-id: i-deb}}\n")
    (tmp_path / "m.yaml").write_text(
        "version: 1\nmodules:\n  - name: hello\n    type: exec\n    needs: [instance-id]\n"
        "    frequency: per-instance\n    settings: {command: \"echo hi > $CIDAG_ROOT/hello\"}\n")
    root = tmp_path / "root"
    r = installed("run", "--root", str(root), "--sources", str(tmp_path / "s.yaml"),
                  "--modules", str(tmp_path / "m.yaml"), "--no-cache", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["instance_id"] == "i-deb" and (root / "hello").read_text() == "hi\n"
    assert (root / "var/lib/cidag/instances/i-deb/markers/hello.json").exists()
    r = installed("clean", "--root", str(root), "-q")
    assert r.returncode == 0 and not (root / "var/lib/cidag/instances").exists()


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian not installed (optional: apt-get install lintian)")
def test_lintian_finds_only_the_missing_manual_page(deb):
    r = subprocess.run(["lintian", "--tag-display-limit", "0", str(deb)], capture_output=True, text=True, timeout=300)
    tags = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == ["W: cidag: no-manual-page [usr/bin/cidag]"], r.stdout


def test_two_builds_at_once_both_end_with_the_package(tmp_path):
    """`make deb` from two places at once (make test's two workers did): each build writes its
    own temp file and renames it whole (they shared one, and one build failed)."""
    cmd = [sys.executable, str(REPO / "scripts/build_deb.py"), "--out", str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), results
    built = tmp_path / f"cidag_{build_deb.version()}_all.deb"
    assert field(built, "Package") == "cidag"
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temp file left
