"""One scripted pveum session for the differential test: every command pvemond runs
(pvemond/pve/pveum.py), with the answers it relies on, successes and errors alike.

Each step is (argv, unordered): `unordered` marks stderr whose lines come out in Perl hash
order (compared sorted). JSON lists are always compared sorted.
"""
from __future__ import annotations

from typing import Tuple

U, T = "monitoring@pve", "monitoring"
PRIVS = "Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit"
J = ("--output-format", "json")

Step = Tuple[Tuple[str, ...], bool]


def s(*argv: str, unordered: bool = False) -> Step:
    return tuple(argv), unordered


SCRIPT = (
    # roles
    s("role", "add", "monitoring", "--privs", PRIVS),
    s("role", "add", "monitoring", "--privs", "VM.Audit"),                # already exists
    s("role", "add", "PVEMonitoring", "--privs", "VM.Audit"),             # PVE namespace
    s("role", "add", "other", "--privs", "Foo.Bar"),                      # invalid privilege
    s("role", "add", "old", "--privs", "VM.Monitor"),                     # gone in PVE 9
    s("role", "add", "a b"),                                              # bad role name
    s("role", "modify", "monitoring", "--privs", "Sys.Audit,VM.Audit"),   # replaces the set
    s("role", "modify", "ghost", "--privs", "VM.Audit"),                  # no such role
    s("role", "modify", "monitoring", "--privs", PRIVS + ",VM.PowerMgmt"),
    s("role", "modify", "PVEAuditor", "--privs", "VM.Audit"),             # built-in
    s("role", "list", *J),
    # users
    s("user", "add", U, "--comment", "PVE monitoring (managed by pvemond)", "--enable", "1",
      "--expire", "0"),
    s("user", "add", U, "--comment", "again", "--enable", "1", "--expire", "0"),  # exists
    s("user", "add", "monitoring"),                                       # not a user id
    s("user", "add", "ab@pve:x"),                                         # bad realm
    s("user", "modify", U, "--enable", "0", "--expire", "1600000000"),
    s("user", "modify", "ghost@pve", "--enable", "1", "--expire", "0"),   # no such user
    s("user", "list", *J),
    s("user", "modify", U, "--enable", "1", "--expire", "0"),
    s("user", "list", "--full", "1", *J),
    # ACLs
    s("acl", "modify", "/", "--roles", "monitoring", "--propagate", "1", "--users", U),
    s("acl", "modify", "/", "--roles", "ghost", "--propagate", "1", "--users", U),
    s("acl", "modify", "/", "--roles", "monitoring", "--users", "ghost@pve"),
    s("acl", "modify", "/foo", "--roles", "monitoring", "--users", U),    # invalid path
    s("acl", "modify", "/", "--roles", "monitoring", unordered=True),     # nobody named
    s("acl", "modify", "/vms/100", "--roles", "monitoring", "--propagate", "0", "--users", U),
    s("acl", "modify", "/", "--roles", "monitoring", "--users", U, *J),   # no format options
    s("acl", "list", *J),
    # tokens
    s("user", "token", "add", U, T, "--privsep", "0", "--expire", "0", "--comment",
      "managed by pvemond", *J),
    s("user", "token", "add", U, T, "--privsep", "0", "--expire", "0", *J),  # exists
    s("user", "token", "add", "ghost@pve", T, "--privsep", "0", *J),     # no such user
    s("user", "token", "add", U, "1abc", *J),                             # bad token name
    s("user", "token", "add", U),                                         # missing argument
    s("user", "token"),                                                   # incomplete command
    s("user", "token", "add", U, "grafana", *J),                          # privsep default
    s("user", "token", "add", U, "probe", "--privsep", "0", "--expire", "1900000000",
      "--comment", "pvemond doctor probe, removed at once", *J),
    s("acl", "modify", "/", "--roles", "monitoring", "--propagate", "1", "--tokens", f"{U}!grafana"),
    s("acl", "modify", "/", "--roles", "monitoring", "--tokens", f"{U}!ghost"),
    s("user", "token", "list", U, *J),
    s("user", "token", "list", "ghost@pve", *J),
    s("user", "list", "--full", "1", *J),
    s("user", "token", "permissions", U, T, "--path", "/", *J),
    s("user", "token", "permissions", U, "grafana", "--path", "/", *J),
    s("user", "token", "permissions", U, "ghost", "--path", "/", *J),
    s("user", "token", "permissions", U, T, *J),
    s("user", "permissions", U, "--path", "/vms/100", *J),
    s("acl", "list", *J),
    s("user", "token", "modify", U, "grafana", "--privsep", "1", "--expire", "0", *J),
    s("user", "token", "modify", U, T, "--privsep", "0", "--expire", "1600000000", *J),
    s("user", "token", "modify", U, "ghost", "--privsep", "0", "--expire", "0", *J),
    s("user", "token", "modify", U, T, "--regenerate", "1", "--privsep", "0", "--expire", "0", *J),
    s("user", "token", "remove", U, "probe"),
    s("user", "token", "delete", U, "grafana"),                           # unknown on 8.1.4
    s("user", "token", "remove", U, "grafana"),
    s("user", "token", "remove", U, "grafana"),                           # no such token
    s("acl", "list", *J),                                                 # the token's ACL
    s("user", "token", "remove", "ghost@pve", T),
    # tearing down, as pvemond uninstall does
    s("acl", "delete", "/", "--roles", "monitoring", "--users", U),
    s("acl", "delete", "/", "--roles", "monitoring", "--users", U),       # already gone
    s("acl", "delete", "/vms/100", "--roles", "monitoring", "--users", U, "--tokens", f"{U}!{T}"),
    s("user", "token", "remove", U, T),
    s("user", "delete", U),
    s("user", "delete", U),                                               # already gone
    s("role", "delete", "monitoring"),
    s("role", "delete", "monitoring"),                                    # no such role
    s("role", "delete", "PVEAuditor"),                                    # built-in
    s("user", "list", *J),
)
