"""The sh wrapper on whichever sh generation this interpreter has (1.14 on Debian, 2.x on PyPI),
driven by a tiny stand-in script so each pveum reaction can be forced."""
import json
import logging
import stat

import pytest
import sh

from pvemond.pve import pveum as P

SECRET = "0b4c5f0e-8b9a-4c3e-9d2f-0a1b2c3d4e5f"


@pytest.fixture
def fake(tmp_path):
    """A pveum that prints $OUT on stdout, $ERR on stderr and exits $RC (set per test)."""
    def make(out="", err="", rc=0, sleep=0):
        script = tmp_path / "pveum"
        (tmp_path / "args").unlink(missing_ok=True)
        (tmp_path / "out").write_text(out)
        (tmp_path / "err").write_text(err)
        script.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$@" > {tmp_path}/args\n'
            f"sleep {sleep}\n"
            f"cat {tmp_path}/out; cat {tmp_path}/err >&2\n"
            f"exit {rc}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return P.Pveum(str(script), timeout=2)
    make.args = lambda: (tmp_path / "args").read_text().splitlines()
    return make


def test_runs_with_arguments_and_returns_stdout(fake):
    p = fake(out="[]")
    assert p.run_json("user", "token", "list", "a@pve") == []
    assert fake.args() == ["user", "token", "list", "a@pve", "--output-format", "json"]


def test_minted_secret_is_wrapped(fake):
    out = json.dumps({"full-tokenid": "m@pve!t", "info": {"privsep": "0"}, "value": SECRET})
    minted = fake(out=out).token_add("m@pve", "t", privsep=False)
    assert minted.secret.reveal() == SECRET and minted.privsep is False
    assert SECRET not in repr(minted) and SECRET not in str(minted.secret)
    assert SECRET not in " ".join(fake.args())


@pytest.mark.parametrize("err,cls", [
    ("create user failed: cfs-lock 'file-user_cfg' error: no quorum!", P.NoQuorum),
    ("please run as root", P.NotRoot),
    ("create role failed: role 'monitoring' already exists", P.AlreadyExists),
    ("no such token 'x' for user 'a@pve'", P.NoSuchToken),
    ("no such user ('a@pve')", P.NoSuchUser),
    ("ACL update failed: role 'x' does not exist", P.NoSuchRole),
    ("400 Parameter verification failed.\nprivs: invalid format - invalid privilege 'VM.Monitor'\n",
     P.InvalidPrivilege),
    ("Unknown option: regenerate\n400 unable to parse option\n", P.UnknownOption),
    ("ERROR: unknown command 'pveum user token delete'", P.UnknownCommand),
    ("something new", P.PveumError),
])
def test_errors_are_typed(fake, err, cls):
    with pytest.raises(P.PveumError) as exc:
        fake(err=err, rc=255).run("x")
    assert type(exc.value) is cls
    assert exc.value.exit_code == 255


def test_no_quorum_says_what_to_do_and_drops_lock_noise(fake):
    err = ("trying to acquire cfs lock 'file-user_cfg' ...\n" * 3
           + "create user failed: cfs-lock 'file-user_cfg' error: no quorum!")
    with pytest.raises(P.NoQuorum) as exc:
        fake(err=err, rc=255).run("user", "add", "a@pve")
    assert "no quorum" in str(exc.value) and "run it on a quorate node" in str(exc.value)
    assert "trying to acquire" not in exc.value.detail


def test_unknown_option_names_it(fake):
    with pytest.raises(P.UnknownOption) as exc:
        fake(err="Unknown option: regenerate\n400 unable to parse option\n", rc=255).run("x")
    assert exc.value.option == "regenerate"


def test_stdout_never_reaches_an_error(fake):
    with pytest.raises(P.PveumError) as exc:
        fake(out=SECRET, err="boom", rc=2).run("x")
    assert SECRET not in str(exc.value) and SECRET not in exc.value.detail
    with pytest.raises(P.PveumError) as exc:
        fake(out=f"not json {SECRET}").run_json("x")
    assert SECRET not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_missing_pveum_means_not_a_pve_node(tmp_path):
    with pytest.raises(P.NotAProxmoxNode, match="not a Proxmox VE node"):
        P.Pveum(str(tmp_path / "nope")).run("user", "list")


def test_timeout(fake):
    p = fake(sleep=5)
    p.timeout = 0.5
    with pytest.raises(P.PveumTimeout, match="did not finish within 0.5 s"):
        p.run("x")


def test_sh_debug_logging_never_sees_stdout(fake, caplog):
    caplog.set_level(logging.DEBUG)
    out = json.dumps({"full-tokenid": "m@pve!t", "info": {"privsep": 1}, "value": SECRET})
    fake(out=out).token_add("m@pve", "t", privsep=True)
    assert SECRET not in caplog.text


def test_sh_generation_is_the_expected_one():
    """Guards the two-generation promise: Debian's interpreter must run Debian's sh."""
    import sys
    major = int(sh.__version__.split(".")[0])
    assert major == (1 if sys.executable.startswith("/usr/bin/") else 2)
