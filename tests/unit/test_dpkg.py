"""dpkg's status file -> the installed libpve-access-control (what pveum can do, before a run)."""
from pvemond.pve import dpkg

STATUS = """\
Package: libpve-access-control-doc
Status: install ok installed
Version: 7.0.0

Package: libpve-access-control
Status: deinstall ok config-files
Version: 8.0.0

Package: libpve-access-control
Status: install ok installed
Priority: optional
Version: 9.1.1
Description: Proxmox VE access control library
 Version: 1.0 (a continuation line is not a field)
"""


def test_the_installed_entry_is_read(tmp_path):
    path = tmp_path / "status"
    path.write_text(STATUS)
    assert dpkg.installed_version(str(path), dpkg.ACCESS_CONTROL) == "9.1.1"


def test_removed_or_missing_is_unknown(tmp_path):
    path = tmp_path / "status"
    path.write_text(STATUS.split("\n\n")[1] + "\n")
    assert dpkg.installed_version(str(path), dpkg.ACCESS_CONTROL) is None
    assert dpkg.installed_version(str(tmp_path / "absent"), dpkg.ACCESS_CONTROL) is None


def test_version_tuple_ignores_epoch_and_suffix():
    assert dpkg.version_tuple("9.1.1") == (9, 1, 1)
    assert dpkg.version_tuple("1:9.0.7~rc2") == (9, 0, 7)
    assert dpkg.version_tuple("8.2.3+pmx1") == (8, 2, 3)
