"""Name grammars of pve-access-control (pveum.md §2.3) and ACL path rules.

Validators raise Invalid with the exact upstream text, newline included: the newline
matters, because a format error ending in "\n" puts a blank line before the usage line.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

REALM = r"[A-Za-z][A-Za-z0-9\.\-_]+"
USER = r"[^\s:/]+"
USERID_RE = re.compile(rf"({USER})@({REALM})")
TOKEN_FULL_RE = re.compile(rf"(({USER})@({REALM}))!({REALM})")
TOKEN_SUBID_RE = re.compile(REALM)
USERID_OR_TOKEN_RE = re.compile(rf"{USER}@{REALM}(?:!{REALM})?")
ROLE_RE = re.compile(r"[A-Za-z0-9\.\-_]+")
GROUP_RE = ROLE_RE
EMAIL_RE = re.compile(r"[\w\+\-\~]+(\.[\w\+\-\~]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*")

_NAME = r"[A-Za-z0-9\.\-_]+"
_CHECK_PATH_RE = re.compile(
    "|".join([
        r"/", r"/access", r"/access/groups", rf"/access/groups/{_NAME}", r"/access/realm",
        rf"/access/realm/{_NAME}", r"/nodes", rf"/nodes/{_NAME}", r"/pool", rf"/pool/{_NAME}",
        r"/sdn", r"/sdn/zones", rf"/sdn/zones/{_NAME}", rf"/sdn/zones/{_NAME}/{_NAME}",
        rf"/sdn/zones/{_NAME}/{_NAME}/[1-9][0-9]{{0,3}}", r"/storage", rf"/storage/{_NAME}",
        r"/vms", r"/vms/[1-9][0-9]{2,}", r"/mapping", rf"/mapping/{_NAME}",
        rf"/mapping/{_NAME}/{_NAME}",
    ])
)


class Invalid(Exception):
    """A grammar violation; str() is the upstream die() text."""


def verify_username(userid: str) -> Tuple[str, str, str]:
    """-> (userid, user part, realm) or Invalid (Auth/Plugin.pm verify_username)."""
    userid = userid or ""
    if len(userid) < 3:
        raise Invalid(f"user name '{userid}' is too short\n")
    if len(userid) > 64:
        raise Invalid(f"user name '{userid}' is too long ({len(userid)} > 64)\n")
    m = USERID_RE.fullmatch(userid)
    if not m:
        raise Invalid(f"value '{userid}' does not look like a valid user name\n")
    return userid, m.group(1), m.group(2)


def valid_username(userid: str) -> bool:
    try:
        verify_username(userid)
    except Invalid:
        return False
    return True


def split_tokenid(tokenid: str) -> Tuple[str, str]:
    """'u@realm!tok' -> ('u@realm', 'tok') or Invalid."""
    m = TOKEN_FULL_RE.fullmatch(tokenid)
    if not m:
        raise Invalid(f"'{tokenid}' is not a valid token ID - not able to split into user and token parts\n")
    return m.group(1), m.group(4)


def try_split_tokenid(tokenid: str) -> Optional[Tuple[str, str]]:
    m = TOKEN_FULL_RE.fullmatch(tokenid)
    return (m.group(1), m.group(4)) if m else None


def verify_tokenid(tokenid: str) -> str:
    """Format 'pve-tokenid'."""
    if not TOKEN_FULL_RE.fullmatch(tokenid):
        raise Invalid(f"value '{tokenid}' does not look like a valid token ID\n")
    return tokenid


def verify_rolename(role: str) -> str:
    if not ROLE_RE.fullmatch(role):
        raise Invalid(f"role name '{role}' contains invalid characters\n")
    return role


def verify_groupname(group: str) -> str:
    if not GROUP_RE.fullmatch(group):
        raise Invalid(f"group name '{group}' contains invalid characters\n")
    return group


def verify_email_opt(email: str) -> str:
    if email != "" and not EMAIL_RE.fullmatch(email):
        raise Invalid("value does not look like a valid email address\n")
    return email


def split_list(text: Optional[str]) -> list:
    """PVE::Tools::split_list: ',' and ';' count as whitespace."""
    if not text:
        return []
    if "\0" in text:
        return [x for x in text.split("\0") if x != ""]
    return text.replace(",", " ").replace(";", " ").split()


def normalize_path(path: Optional[str]) -> Optional[str]:
    """AccessControl.pm normalize_path: collapse '//', drop trailing '/', None if invalid."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path)
    path = re.sub(r"/$", "", path) or "/"
    if not path.startswith("/"):
        path = "/" + path
    if not re.fullmatch(r"[A-Za-z0-9\.\-_/]+", path):
        return None
    return path


def check_path(path: str) -> bool:
    """Paths `acl modify` accepts (AccessControl.pm check_path)."""
    return bool(_CHECK_PATH_RE.fullmatch(path))


def perl_true(value: object) -> bool:
    """Perl truthiness of a scalar: undef, '' and '0' are false."""
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return value != 0
    return value not in ("", "0")
