"""cidag.paths: confinement to the target root and safe writes."""
from __future__ import annotations

import os
import stat

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidag import paths
from cidag.paths import PathRefused


def test_relative_and_absolute_paths_land_in_root(tmp_path):
    assert paths.confine(tmp_path, "/etc/hosts") == tmp_path / "etc/hosts"
    assert paths.confine(tmp_path, "etc/hosts") == tmp_path / "etc/hosts"
    assert paths.confine(tmp_path, "/") == tmp_path


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/../../x", "a/../b", "", "a\0b"])
def test_dotdot_and_junk_refused(tmp_path, bad):
    with pytest.raises(PathRefused):
        paths.confine(tmp_path, bad)


def test_absolute_symlink_out_of_root_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(outside / "shadow"), root / "etc/shadow")
    with pytest.raises(PathRefused, match="outside the root"):
        paths.write_file(root, "/etc/shadow", "x")
    assert not (outside / "shadow").exists()


def test_symlinked_parent_out_of_root_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), root / "etc")
    with pytest.raises(PathRefused):
        paths.write_file(root, "/etc/cron.d/evil", "x")
    os.symlink("../../outside", root / "rel")
    with pytest.raises(PathRefused, match="climbs above"):
        paths.write_file(root, "/rel/evil", "x")
    assert list(outside.iterdir()) == []


def test_symlinks_inside_root_are_followed(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    os.symlink(str(tmp_path / "real"), tmp_path / "abslink")
    assert paths.write_file(tmp_path, "/link/a", "1") == tmp_path / "real/a"
    assert paths.write_file(tmp_path, "/abslink/b", "2") == tmp_path / "real/b"
    with pytest.raises(PathRefused, match="symlink"):
        paths.confine(tmp_path, "/link/a", follow_symlinks=False)


def test_symlink_loop_refused(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(PathRefused, match="too many"):
        paths.confine(tmp_path, "/a/x")


def test_atomic_write_mode_and_no_temp_left(tmp_path):
    p = paths.write_file(tmp_path, "/etc/x/y.conf", b"hello\n", mode=0o640)
    assert p.read_bytes() == b"hello\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    paths.write_file(tmp_path, "/etc/x/y.conf", "again\n", mode=0o600)
    assert p.read_text() == "again\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(os.listdir(p.parent)) == ["y.conf"]


def test_append_and_refuse_directory(tmp_path):
    paths.write_file(tmp_path, "/f", "a\n")
    paths.write_file(tmp_path, "/f", "b\n", append=True)
    assert (tmp_path / "f").read_text() == "a\nb\n"
    (tmp_path / "d").mkdir()
    with pytest.raises(PathRefused, match="directory"):
        paths.write_file(tmp_path, "/d", "x")


def test_final_symlink_not_followed_on_append(tmp_path):
    (tmp_path / "target").write_text("")
    os.symlink("target", tmp_path / "l")
    # Resolved inside the root: allowed, and lands on the target.
    paths.write_file(tmp_path, "/l", "x", append=True)
    assert (tmp_path / "target").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_set_when_root(tmp_path):
    p = paths.write_file(tmp_path, "/o", "x", uid=1234, gid=4321)
    assert (p.stat().st_uid, p.stat().st_gid) == (1234, 4321)


def test_read_file_limit(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 100)
    assert paths.read_file(tmp_path, "/missing") is None
    with pytest.raises(PathRefused, match="larger"):
        paths.read_file(tmp_path, "/big", limit=10)


SEGMENTS = ["a", "b", "..", ".", "etc", "x y", ""]


@given(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6),
       st.sampled_from(["a", "../..", "/", "/etc", "..", "b/../../.."]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_confine_never_leaves_root(tmp_path, parts, link_target):
    root = tmp_path / "r"
    root.mkdir(exist_ok=True)
    link = root / "l"
    if link.is_symlink():
        link.unlink()
    os.symlink(link_target, link)
    path = "/".join(["l"] + parts)
    try:
        out = paths.confine(root, path)
    except PathRefused:
        return
    real_root = Path(os.path.realpath(root))
    assert out == real_root or real_root in out.parents


def test_parallel_writers_share_new_parents(tmp_path):
    import threading

    errors = []

    def write(i):
        try:
            paths.write_file(tmp_path, f"/a/b/c/f{i}", str(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(os.listdir(tmp_path / "a/b/c")) == 16
