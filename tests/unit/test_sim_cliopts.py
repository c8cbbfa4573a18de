"""Getopt::Long-style option parsing and schema validation (pveum.md §1.2)."""
import re

import pytest

from pvesim import names
from pvesim.cliopts import OptionError, Param, ParamError, UsageError, parse_args, validate

ACL = (
    Param("path", optional=False), Param("roles", is_list=True, optional=False),
    Param("users", is_list=True), Param("groups", is_list=True), Param("tokens", is_list=True),
    Param("propagate", type="boolean"),
)


def test_single_dash_prefix_abbreviation_and_permute():
    values = parse_args(["-role", "R", "/", "-user", "a@pve", "-token", "a@pve!tk"], ACL, ("path",))
    assert values == {"roles": "R", "path": "/", "users": "a@pve", "tokens": "a@pve!tk"}


def test_equals_form_repeated_lists_and_case_insensitive_names():
    values = parse_args(["/", "--roles=A", "--ROLES", "B", "--users=a@pve"], ACL, ("path",))
    assert values["roles"] == "A,B" and values["users"] == "a@pve"


@pytest.mark.parametrize("given, expected", [
    (["--propagate"], "1"), (["--propagate", "0"], "0"), (["--propagate=off"], "0"), (["--propagate", "YES"], "1"),
    (["--propagate", "True"], "1"), (["--propagate", "no"], "0"), (["--propagate="], "1"),
    (["--propagate", "--roles", "R"], "1"),  # the next option is not taken as the value
])
def test_booleans(given, expected):
    assert parse_args(["/", "--roles", "X"] + given, ACL, ("path",))["propagate"] == expected


def test_bad_boolean():
    with pytest.raises(UsageError, match="^unable to parse boolean option$"):
        parse_args(["/", "--propagate", "maybe"], ACL, ("path",))


def test_unknown_and_ambiguous_options_are_collected():
    with pytest.raises(OptionError) as err:
        parse_args(["/", "--output-format", "json", "-p", "1", "--roles"], ACL, ("path",))
    assert err.value.warnings == [
        "Unknown option: output-format\n",
        "Option p is ambiguous (path, propagate)\n",
        "Option roles requires an argument\n",
    ]


def test_positional_counts():
    with pytest.raises(UsageError, match="^not enough arguments$"):
        parse_args(["--roles", "R"], ACL, ("path",))
    with pytest.raises(UsageError, match="^too many arguments$"):
        parse_args(["/", "/vms", "--roles", "R"], ACL, ("path",))
    assert parse_args([], (Param("userid"),), ("userid",), optional_positional=True) == {}


def test_double_dash_ends_options():
    values = parse_args(["--roles", "R", "--", "-odd"], ACL, ("path",))
    assert values["path"] == "-odd"


def only_vm_audit(priv):
    if priv != "VM.Audit":
        raise names.Invalid(f"invalid privilege '{priv}'\n")
    return priv


def test_validation_messages():
    params = (
        Param("userid", optional=False, fmt=names.verify_username),
        Param("tokenid", pattern=re.compile(names.REALM)),
        Param("expire", type="integer", minimum=0),
        Param("password", min_length=8, max_length=64),
        Param("roles", optional=False),
        Param("privs", is_list=True, fmt=only_vm_audit),
        Param("append", type="boolean", requires="groups"),
        Param("output-format", enum=("text", "json")),
    )
    with pytest.raises(ParamError) as err:
        validate({"userid": "monitor", "tokenid": "1x", "expire": "-1", "password": "short", "privs": "VM.Audit,Foo",
                  "append": "1", "output-format": "xml"}, params)
    assert err.value.msg == "Parameter verification failed."
    assert err.value.errors == {
        "userid": "invalid format - value 'monitor' does not look like a valid user name\n",
        "tokenid": "value does not match the regex pattern",
        "expire": "value must have a minimum value of 0",
        "password": "value must be at least 8 characters long",
        "roles": "property is missing and it is not optional",
        "privs": "invalid format - invalid privilege 'Foo'\n",
        "groups": "missing property - 'append' requires this property",
        "output-format": "value 'xml' does not have a value in the enumeration 'text, json'",
    }
    with pytest.raises(ParamError) as err:
        validate({"userid": "a@pve", "roles": "R", "expire": "soon"}, params)
    assert err.value.errors == {"expire": "type check ('integer') failed - got 'soon'"}
