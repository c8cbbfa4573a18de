"""hostfiles.write_kept: a replaced file keeps owner, group and mode; symlinks are written
through; new files are private; every refusal names its fix. Runs as root (chown)."""
from __future__ import annotations

import grp
import os
import pwd
import stat
import threading
from pathlib import Path

import pytest

from pvemond import files
from pvemond.hostfiles import HostFileError, write_kept

USER = pwd.getpwuid(65534).pw_name           # nobody
GROUP = grp.getgrgid(65534).gr_name          # nogroup
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def owner_mode(path: "Path | str") -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_replacing_keeps_owner_group_and_mode(tmp_path: Path):
    path = tmp_path / "pve.yml"
    path.write_text("old\n")
    os.chown(path, 0, 65534)
    path.chmod(0o640)
    assert write_kept(path, b"new\n") == str(path)
    assert path.read_bytes() == b"new\n" and owner_mode(path) == (0, 65534, 0o640)


def test_replacing_never_widens_and_drops_set_id_bits(tmp_path: Path):
    path = tmp_path / "pve.yml"
    path.write_text("old\n")
    path.chmod(0o4600)
    write_kept(path, b"new\n")
    assert owner_mode(path) == (0, 0, 0o600)


def test_new_file_is_private_and_root_owned(tmp_path: Path):
    path = write_kept(tmp_path / "new.yml", b"x")
    assert owner_mode(path) == (0, 0, 0o600)


@pytest.mark.parametrize("owner, group, expected", [
    (None, GROUP, (0, 65534, 0o640)), (USER, None, (65534, 0, 0o640)),
    (USER, GROUP, (65534, 65534, 0o640))])
def test_new_file_for_a_named_reader(tmp_path: Path, owner, group, expected):
    path = write_kept(tmp_path / "new.yml", b"x", owner=owner, group=group)
    assert owner_mode(path) == expected


def test_named_group_on_an_existing_file_keeps_its_mode(tmp_path: Path):
    path = tmp_path / "pve.yml"
    path.write_text("old\n")
    path.chmod(0o600)
    write_kept(path, b"new\n", group=GROUP)
    assert owner_mode(path) == (0, 65534, 0o600)


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path):
    real = tmp_path / "real" / "pve.yml"
    real.parent.mkdir()
    real.write_text("old\n")
    os.chown(real, 0, 65534)
    real.chmod(0o640)
    link = tmp_path / "pve.yml"
    link.symlink_to(os.path.relpath(real, tmp_path))
    assert write_kept(link, b"new\n") == str(real)
    assert link.is_symlink() and real.read_text() == "new\n"
    assert owner_mode(real) == (0, 65534, 0o640)


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "x").symlink_to(d / "gone"), "is a symlink to .*gone, which does not exist"),
    (lambda d: None, "directory .*/missing does not exist .*mkdir -p"),
    (lambda d: (d / "x").mkdir(), "exists and is not a regular file"),
])
def test_refusals_name_the_fix(tmp_path: Path, make, message):
    make(tmp_path)
    target = tmp_path / ("missing/x" if "missing" in message else "x")
    with pytest.raises(HostFileError, match=message) as err:
        write_kept(target, b"secret")
    assert isinstance(err.value, OSError) and err.value.strerror == str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["x"])  # no temp file left


@pytest.mark.parametrize("kw, message", [
    ({"owner": "no-such-user-h3"}, "--owner no-such-user-h3: no such user"),
    ({"group": "no-such-group-h3"}, "--group no-such-group-h3: no such group")])
def test_unknown_user_or_group(tmp_path: Path, kw, message):
    with pytest.raises(HostFileError, match=message):
        write_kept(tmp_path / "x", b"secret", **kw)
    assert not (tmp_path / "x").exists()


def test_the_temp_file_is_0600_before_the_first_byte(tmp_path: Path, monkeypatch):
    seen = []
    real_fdopen = os.fdopen

    def spy(fd, *args, **kwargs):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", spy)
    write_kept(tmp_path / "x", b"secret", group=GROUP)
    assert seen == [0o600]


def test_atomic_and_the_directory_is_synced(tmp_path: Path, monkeypatch):
    path = tmp_path / "pve.yml"
    path.write_text("old\n")
    synced, stop = [], threading.Event()
    monkeypatch.setattr(files, "sync_directory", lambda d: synced.append(d))
    seen = set()

    def reader():
        while not stop.is_set():
            seen.add(path.read_bytes())

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(50):
        write_kept(path, b"A" * 65536)
        write_kept(path, b"old\n")
    stop.set()
    t.join()
    assert seen <= {b"old\n", b"A" * 65536}  # never a torn or empty file
    assert synced == [str(tmp_path)] * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pve.yml"]
