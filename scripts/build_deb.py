#!/usr/bin/env python3
"""Build the cidag Debian package from this checkout: a staging tree, then `dpkg-deb --build`.

    python3 scripts/build_deb.py [--out DIR]      (what `make deb` runs)

No debhelper: the tree is laid out here (packaging/deb holds the control template, the
maintainer scripts, the copyright and the /usr/bin/cidag script), every file root-owned
with a fixed mode and mtime (SOURCE_DATE_EPOCH, else the newest input's), so the same
checkout gives the same .deb. Prints the path of the .deb. Stdlib only.
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging" / "deb"
SITE = "usr/lib/python3/dist-packages"
UNIT_DIR = "usr/lib/systemd/system"
GENERATOR_DIR = "usr/lib/systemd/system-generators"
CONF_DIR = "etc/cidag"
MANIFESTS = ("sources.yaml", "modules.yaml")
SKIP = re.compile(r"(^|/)(__pycache__|.*\.pyc|.*~|\..*\.swp)$")


def version() -> str:
    text = (REPO / "cidag/__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def units() -> list[str]:
    """The units with an [Install] section (the others are pulled in by them)."""
    data = REPO / "cidag/data"
    return sorted(p.name for p in data.iterdir()
                  if p.suffix in (".service", ".target") and "\n[Install]" in p.read_text())


def inputs() -> list[Path]:
    """Every file the package is made of (also the guest image's key: tests/vm/guest_image.py)."""
    files = [p for p in (REPO / "cidag").rglob("*") if p.is_file() and not SKIP.search(str(p.relative_to(REPO)))]
    files += [p for p in PACKAGING.iterdir() if p.is_file()]
    files.append(Path(__file__).resolve())
    return sorted(files)


def _copy(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def maintainer() -> str:
    text = (PACKAGING / "control.in").read_text()
    return re.search(r"^Maintainer: (.+)$", text, re.M).group(1)


def changelog(epoch: int) -> str:
    """A one-entry Debian changelog (the project's history is its git log)."""
    from email.utils import formatdate

    return (f"cidag ({version()}) unstable; urgency=medium\n\n"
            "  * Built from a checkout of the cidag repository (scripts/build_deb.py);\n"
            "    the changes are in its git history.\n\n"
            f" -- {maintainer()}  {formatdate(epoch, usegmt=False)}\n")


def stage(tree: Path, epoch: int = 0) -> None:
    """Lay the package's files out under `tree` (DEBIAN/ included)."""
    for src in inputs():
        rel = src.relative_to(REPO)
        if rel.parts[0] == "cidag":
            _copy(src, tree / SITE / rel, 0o644)
    _copy(PACKAGING / "cidag", tree / "usr/bin/cidag", 0o755)
    data = REPO / "cidag/data"
    for unit in sorted(p for p in data.iterdir() if p.suffix in (".service", ".target")):
        _copy(unit, tree / UNIT_DIR / unit.name, 0o644)
    _copy(data / "cidag-generator", tree / GENERATOR_DIR / "cidag-generator", 0o755)
    for name in MANIFESTS:
        _copy(REPO / "cidag/defaults" / name, tree / CONF_DIR / name, 0o644)
    # The state dir, so the generator can tell "no seed in /var" from "/var not mounted yet".
    (tree / "var/lib/cidag").mkdir(parents=True)
    doc = tree / "usr/share/doc/cidag"
    _copy(PACKAGING / "copyright", doc / "copyright", 0o644)
    with open(doc / "changelog.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(changelog(epoch).encode())
    (doc / "changelog.gz").chmod(0o644)
    _copy(PACKAGING / "lintian-overrides", tree / "usr/share/lintian/overrides/cidag", 0o644)
    # The generator's copy inside the package (resources.files() finds it there) is a script too.
    (tree / SITE / "cidag/data/cidag-generator").chmod(0o755)

    debian = tree / "DEBIAN"
    debian.mkdir()
    size_kib = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) // 1024 + 1
    unit_list = " ".join(units())
    (debian / "control").write_text(
        (PACKAGING / "control.in").read_text().replace("@VERSION@", version()).replace("@SIZE@", str(size_kib)))
    (debian / "conffiles").write_text("".join(f"/{CONF_DIR}/{n}\n" for n in MANIFESTS))
    for script in ("postinst", "prerm", "postrm"):
        (debian / script).write_text((PACKAGING / script).read_text().replace("@UNITS@", unit_list))
        (debian / script).chmod(0o755)
    for name in ("control", "conffiles"):
        (debian / name).chmod(0o644)


def build(out_dir: Path) -> Path:
    """Build the .deb into `out_dir`; return its path."""
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("build-deb: dpkg-deb not found (apt-get install dpkg)")
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or max(int(p.stat().st_mtime) for p in inputs()))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"cidag_{version()}_all.deb"
    with tempfile.TemporaryDirectory(prefix="cidag-deb.") as tmp:
        tree = Path(tmp) / "cidag"
        tree.mkdir()
        stage(tree, epoch)
        for path in [tree, *tree.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        # Its own temp name: two builds at once (make test's two workers) each rename a whole file.
        partial = out_dir / f".{target.name}.{os.getpid()}.tmp"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(partial)],
                       check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
        os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "dist"), help="directory for the .deb (default: dist/)")
    args = parser.parse_args(argv)
    print(build(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
