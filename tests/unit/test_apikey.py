"""The TCP key file: root's own, mode 0600 or stricter, else refused with the fixing command."""
from __future__ import annotations

import os

import pytest

from pvemond import apikey

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "api.key"
    path.write_text("s3cret\n")
    os.chmod(path, 0o600)
    return path


def test_a_root_only_key_is_read(key):
    assert apikey.read(str(key)) == "s3cret"
    os.chmod(key, 0o400)
    assert apikey.read(str(key)) == "s3cret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_group_or_other_bits_are_refused(key, mode):
    os.chmod(key, mode)
    with pytest.raises(apikey.KeyFileError, match=f"mode 0{mode:o}.*chmod 600 {key}"):
        apikey.read(str(key))


def test_another_owner_is_refused(key):
    os.chown(key, 65534, 65534)
    with pytest.raises(apikey.KeyFileError, match="uid 65534, not root: run chown root:root"):
        apikey.read(str(key))


def test_missing_or_empty_is_refused(key, tmp_path):
    with pytest.raises(apikey.KeyFileError, match="needs a key"):
        apikey.read(str(tmp_path / "nope"))
    key.write_text("\n")
    with pytest.raises(apikey.KeyFileError, match="is empty"):
        apikey.read(str(key))
